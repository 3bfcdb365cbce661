"""Running gradient models and plain ONNX models: the runtime seam of the project.

One module per job:

- :mod:`models.runtime.backend`: the :class:`Backend` / :class:`BackendModel` interface (open a
  model, describe its tensors, run it) that the sessions run on; onnx and numpy only.
- :mod:`models.runtime.sessions`: :class:`GradientSession` (a gradient model as an
  :class:`estimator.gradient_model.GradientModel`) and :class:`ForwardSession`, on any backend.
- :mod:`models.runtime.ort_backend`: the ONNX Runtime backend (sessions, I/O binding).
- :mod:`models.runtime.providers`: which execution providers a session uses (the device, the
  ``providers`` setting, what really loads on this host).
- :mod:`models.runtime.graph`: graph surgery before a run (pruning to some outputs, freezing
  weights, tensor shapes); :mod:`models.runtime.memory`: the per-sample memory estimate;
  :mod:`models.runtime.batches`: fixed-batch splitting. These three never import onnxruntime.

The names below are importable from ``models.runtime`` itself; each is loaded from its module on
first use, so importing one of the onnxruntime-free modules does not pull in onnxruntime.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from models.runtime.backend import Backend, BackendModel, DeviceUnavailableError, TensorSpec
    from models.runtime.graph import forward_model, freeze_weights
    from models.runtime.memory import estimate_bytes_per_sample
    from models.runtime.ort_backend import OrtBackend, OrtModel
    from models.runtime.providers import (
        CPU_PROVIDER,
        CUDA_PROVIDER,
        Device,
        RuntimeOptions,
        available_providers,
        check_providers,
        parse_device,
    )
    from models.runtime.sessions import ForwardSession, GradientSession

_HOMES = {
    "Backend": "backend",
    "BackendModel": "backend",
    "DeviceUnavailableError": "backend",
    "TensorSpec": "backend",
    "forward_model": "graph",
    "freeze_weights": "graph",
    "estimate_bytes_per_sample": "memory",
    "OrtBackend": "ort_backend",
    "OrtModel": "ort_backend",
    "CPU_PROVIDER": "providers",
    "CUDA_PROVIDER": "providers",
    "Device": "providers",
    "RuntimeOptions": "providers",
    "available_providers": "providers",
    "check_providers": "providers",
    "parse_device": "providers",
    "ForwardSession": "sessions",
    "GradientSession": "sessions",
}

__all__ = [
    "Backend",
    "BackendModel",
    "CPU_PROVIDER",
    "CUDA_PROVIDER",
    "Device",
    "DeviceUnavailableError",
    "ForwardSession",
    "GradientSession",
    "OrtBackend",
    "OrtModel",
    "RuntimeOptions",
    "TensorSpec",
    "available_providers",
    "check_providers",
    "estimate_bytes_per_sample",
    "forward_model",
    "freeze_weights",
    "parse_device",
]


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'models.runtime' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"models.runtime.{home}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_HOMES])
