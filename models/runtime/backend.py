"""The seam between the sessions and what runs a graph: a :class:`Backend` opens ONNX models, each
as a :class:`BackendModel` that describes its tensors and runs them.

:class:`models.runtime.sessions.GradientSession` (the gradient graph) and
:class:`models.runtime.sessions.ForwardSession` (the clean forward pass) do everything else
(metadata, validation, weight overrides, fixed batches) on top of this interface, so a new
runtime (another ONNX Runtime execution provider set, a remote backend, a pure-Python evaluator)
is one class. :class:`models.runtime.ort_backend.OrtBackend` is the one the server uses.

This module imports onnx and numpy only.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np
import onnx

__all__ = ["Backend", "BackendModel", "DeviceUnavailableError", "OutputSpecs", "TensorSpec"]


class DeviceUnavailableError(RuntimeError):
    """A device or execution provider was asked for that does not load on this host (``device="cuda"``
    without a working CUDA provider, or a ``providers`` entry onnxruntime lacks or cannot load)."""


@dataclass(frozen=True)
class TensorSpec:
    """One input or output of an opened model as its backend sees it.

    Attributes:
        name: the tensor's name in the graph.
        dtype: its element type as numpy spells it (``None``: not a tensor, or a type numpy lacks).
        shape: its dimensions: ints where static, the symbol where named, ``None`` where unknown.
    """

    name: str
    dtype: np.dtype | None
    shape: tuple[int | str | None, ...]


OutputSpecs = Mapping[str, tuple[tuple[int, ...], np.dtype]]
"""Output name → (shape of one instance, without the batch; dtype): a hint for backends that
allocate outputs ahead of a run (ONNX Runtime's I/O binding)."""


@runtime_checkable
class BackendModel(Protocol):
    """One ONNX model opened by a :class:`Backend`; safe to :meth:`run` from several threads at once."""

    @property
    def provider(self) -> str:
        """Where it really runs, as the backend reports it (e.g. ``"CPUExecutionProvider"``)."""
        ...

    @property
    def inputs(self) -> Sequence[TensorSpec]:
        """The inputs a run must be fed (graph inputs without a default value), in graph order."""
        ...

    @property
    def outputs(self) -> Sequence[TensorSpec]:
        """The graph outputs, in graph order."""
        ...

    def run(self, names: Sequence[str], feed: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        """Compute the outputs ``names`` from ``feed`` (input name → array; an initializer that is also a
        graph input may be fed to override it). Returns one array per name, in order; raises on failure."""
        ...


@runtime_checkable
class Backend(Protocol):
    """Opens ONNX models for one device / runtime configuration.

    Attributes:
        name: the runtime, for error messages (e.g. ``"onnxruntime"``).
    """

    name: str

    def open(
        self,
        model: onnx.ModelProto,
        *,
        external_data_dir: Path | None = None,
        output_specs: OutputSpecs | None = None,
    ) -> BackendModel:
        """Open ``model`` (already pruned to what its runs need).

        Args:
            model: the graph; its external data (if any) lies in ``external_data_dir``.
            external_data_dir: the folder of the files ``model``'s external tensors reference.
            output_specs: instance shapes and dtypes of outputs that will be asked for (a hint).

        Raises:
            models.gradient_graph.InvalidModelError: the backend cannot load the model.
            DeviceUnavailableError: its device or provider does not load on this host.
        """
        ...
