"""Which ONNX Runtime execution providers a session uses: the device setting, the explicit provider
list of the settings, and what really loads on this host.

``onnxruntime-gpu`` on a host without a GPU lists the CUDA provider as available, logs an error when
a session asks for it and silently runs on CPU, so what loads is probed (once per process and
provider, with a one-node model) rather than trusted from :func:`onnxruntime.get_available_providers`,
and the provider in use is read back from each session (:mod:`models.runtime.ort_backend`).
"""

from __future__ import annotations

import ctypes
import functools
import re
from collections.abc import Sequence
from dataclasses import dataclass

import onnx
import onnxruntime as ort

from estimator.errors import InvalidArgumentError
from models.runtime.backend import DeviceUnavailableError

__all__ = [
    "CPU_PROVIDER",
    "CUDA_PROVIDER",
    "Device",
    "DeviceUnavailableError",
    "RuntimeOptions",
    "available_providers",
    "check_providers",
    "cuda_loads",
    "parse_device",
    "provider_loads",
    "session_providers",
]

Device = str
"""``"auto"``, ``"cpu"``, ``"cuda"`` (GPU 0) or ``"cuda:N"`` (GPU N); see :func:`parse_device`."""

CPU_PROVIDER = "CPUExecutionProvider"
CUDA_PROVIDER = "CUDAExecutionProvider"

_DEVICES = ("auto", "cpu", "cuda", "cuda:N")
_CONV_ALGO_SEARCHES = ("EXHAUSTIVE", "HEURISTIC", "DEFAULT")
_IO_BINDINGS = ("auto", "on", "off")
# Providers that cannot load without the NVIDIA driver (checked first: onnxruntime logs an error
# on every CPU-only host when it tries).
_NEEDS_CUDA_DRIVER = frozenset({CUDA_PROVIDER, "TensorrtExecutionProvider", "NvTensorRTRTXExecutionProvider"})


def _probe_model() -> bytes:
    graph = onnx.helper.make_graph(
        [onnx.helper.make_node("Identity", ["x"], ["y"])],
        "mollify_provider_probe",
        [onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1])],
        [onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1])],
    )
    probe = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 13)])
    probe.ir_version = 8
    serialized: bytes = probe.SerializeToString()
    return serialized


@functools.cache
def provider_loads(name: str) -> bool:
    """Whether a session asking for execution provider ``name`` really runs on it here (probed once)."""
    if name == CPU_PROVIDER:
        return True
    if name not in ort.get_available_providers():
        return False
    if name in _NEEDS_CUDA_DRIVER and not _cuda_driver_present():
        return False
    try:
        session = ort.InferenceSession(_probe_model(), providers=[name, CPU_PROVIDER])
    except Exception:
        return False
    return bool(session.get_providers()[0] == name)


def cuda_loads() -> bool:
    """Whether a session really runs on CUDA here (probed once per process with a one-node model)."""
    return provider_loads(CUDA_PROVIDER)


def _cuda_driver_present() -> bool:
    # Without the driver library the CUDA provider cannot load; checking first avoids the error
    # that onnxruntime logs on every CPU-only host when it tries.
    try:
        ctypes.CDLL("libcuda.so.1")
    except OSError:
        return False
    return True


def available_providers() -> list[str]:
    """Execution providers that really work on this host, fastest first (e.g. ``["CPUExecutionProvider"]``)."""
    return [CUDA_PROVIDER, CPU_PROVIDER] if cuda_loads() else [CPU_PROVIDER]


def check_providers(names: Sequence[str]) -> None:
    """Raise unless every execution provider in ``names`` exists in this onnxruntime and loads here.

    Raises:
        DeviceUnavailableError: the message names the providers that fail, the ones onnxruntime
            lists as available, and whether a name is unknown to onnxruntime altogether.
    """
    known = ort.get_all_providers()
    listed = ort.get_available_providers()
    unknown = [name for name in names if name not in known]
    if unknown:
        raise DeviceUnavailableError(
            f"unknown execution providers {unknown} (names are case-sensitive); onnxruntime "
            f"{ort.__version__} lists {listed} as available in this build"
        )
    missing = [name for name in names if name not in listed]
    if missing:
        raise DeviceUnavailableError(
            f"execution providers {missing} are not in this onnxruntime build ({ort.__version__} lists "
            f"{listed}); install the build that has them (e.g. onnxruntime-gpu, onnxruntime-openvino)"
        )
    broken = [name for name in names if not provider_loads(name)]
    if broken:
        raise DeviceUnavailableError(
            f"execution providers {broken} are listed by onnxruntime {ort.__version__} ({listed}) but do not "
            "load on this host (missing driver or libraries; CUDA and TensorRT need an NVIDIA driver plus "
            f"the CUDA and cuDNN libraries); {CPU_PROVIDER} always loads"
        )


def parse_device(device: str) -> tuple[str, int]:
    """``"cuda:1"`` → ``("cuda", 1)``; ``"cuda"`` is GPU 0; ``"auto"`` and ``"cpu"`` have index 0.

    Raises:
        InvalidArgumentError: anything else (the message lists the accepted spellings).
    """
    match = re.fullmatch(r"(auto|cpu|cuda)(?::(\d+))?", device) if isinstance(device, str) else None
    if match is None or (match.group(2) is not None and match.group(1) != "cuda"):
        raise InvalidArgumentError(
            f"device must be one of {_DEVICES} (N: the GPU index, 0 first), got {device!r}"
        )
    return match.group(1), int(match.group(2) or 0)


@dataclass(frozen=True)
class RuntimeOptions:
    """How ONNX Runtime runs the sessions: I/O binding and the CUDA execution provider's options.

    Attributes:
        io_binding: ``"auto"`` (on for CUDA sessions, off on CPU), ``"on"`` or ``"off"``. With I/O
            binding, inputs, cotangents and outputs live in buffers of the session's device that
            are bound once per batch shape and reused by later calls of that shape.
        cudnn_conv_algo_search: ``"EXHAUSTIVE"`` (ONNX Runtime's default: every cuDNN convolution
            algorithm is timed once per shape), ``"HEURISTIC"`` or ``"DEFAULT"``.
        gpu_mem_limit: the CUDA memory arena's limit in bytes; 0: no limit.
        allow_tf32: let cuDNN and cuBLAS use TF32 tensor cores for float32 work (faster, about 10
            mantissa bits: gradients then differ from the CPU's beyond float rounding). Off by default.
        providers: ONNX Runtime execution providers in priority order (e.g. ``("CUDAExecutionProvider",
            "CPUExecutionProvider")``); empty (the default): chosen from the device, CUDA where it
            really loads, else CPU. Set, they replace that choice (the device then only gives the
            GPU index); every one of them must load (:func:`check_providers`), there is no silent fallback.
    """

    io_binding: str = "auto"
    cudnn_conv_algo_search: str = "EXHAUSTIVE"
    gpu_mem_limit: int = 0
    allow_tf32: bool = False
    providers: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not isinstance(self.providers, tuple) or not all(isinstance(p, str) and p for p in self.providers):
            raise InvalidArgumentError(f"providers must be a tuple of provider names, got {self.providers!r}")
        if len(set(self.providers)) != len(self.providers):
            raise InvalidArgumentError(f"providers must not repeat a name, got {list(self.providers)}")
        if self.io_binding not in _IO_BINDINGS:
            raise InvalidArgumentError(f"io_binding must be one of {_IO_BINDINGS}, got {self.io_binding!r}")
        if self.cudnn_conv_algo_search not in _CONV_ALGO_SEARCHES:
            raise InvalidArgumentError(
                f"cudnn_conv_algo_search must be one of {_CONV_ALGO_SEARCHES}, got {self.cudnn_conv_algo_search!r}"
            )
        if not isinstance(self.gpu_mem_limit, int) or self.gpu_mem_limit < 0:
            raise InvalidArgumentError(
                f"gpu_mem_limit must be a byte count >= 0 (0: no limit), got {self.gpu_mem_limit!r}"
            )

    def cuda_provider_options(self, device_id: int) -> dict[str, str]:
        """The options given to ``CUDAExecutionProvider`` for GPU ``device_id`` (all values strings)."""
        options = {
            "device_id": str(device_id),
            "cudnn_conv_algo_search": self.cudnn_conv_algo_search,
            "use_tf32": "1" if self.allow_tf32 else "0",
        }
        if self.gpu_mem_limit:
            options["gpu_mem_limit"] = str(self.gpu_mem_limit)
        return options

    def binds_io(self, provider: str) -> bool:
        """Whether sessions running on ``provider`` use I/O binding."""
        return self.io_binding == "on" or (self.io_binding == "auto" and provider == CUDA_PROVIDER)


def session_providers(
    kind: str, index: int, options: RuntimeOptions
) -> list[str | tuple[str, dict[str, str]]]:
    """The ``providers`` argument of a session for a parsed device (see :func:`parse_device`).

    ``options.providers`` when set (the CUDA provider given its options for GPU ``index``), else
    CUDA then CPU where CUDA really loads and ``kind`` is not ``"cpu"``, else CPU alone.
    """
    if options.providers:
        return [
            (name, options.cuda_provider_options(index)) if name == CUDA_PROVIDER else name
            for name in options.providers
        ]
    if kind != "cpu" and cuda_loads():
        return [(CUDA_PROVIDER, options.cuda_provider_options(index)), CPU_PROVIDER]
    return [CPU_PROVIDER]
