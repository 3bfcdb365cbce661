"""The ONNX Runtime backend: :class:`OrtBackend` opens models as ``onnxruntime.InferenceSession``
on the execution providers of :mod:`models.runtime.providers`, and :class:`OrtModel` runs them,
through I/O binding where :class:`~models.runtime.providers.RuntimeOptions` says so.

With :mod:`models.runtime.providers`, the only module of the project that imports onnxruntime.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

from estimator.errors import InvalidArgumentError
from models.gradient_graph import InvalidModelError
from models.runtime.backend import DeviceUnavailableError, OutputSpecs, TensorSpec
from models.runtime.providers import (
    CPU_PROVIDER,
    CUDA_PROVIDER,
    Device,
    RuntimeOptions,
    check_providers,
    cuda_loads,
    parse_device,
    session_providers,
)

__all__ = ["OrtBackend", "OrtModel"]

# onnxruntime's session option naming the folder of the external data of a model given as bytes.
_EXTERNAL_DATA_FOLDER = "session.model_external_initializers_file_folder_path"
_ORT_DTYPES: dict[str, np.dtype] = {
    f"tensor({name})": np.dtype(dtype)
    for name, dtype in (
        ("float", np.float32),
        ("double", np.float64),
        ("float16", np.float16),
        ("int8", np.int8),
        ("int16", np.int16),
        ("int32", np.int32),
        ("int64", np.int64),
        ("uint8", np.uint8),
        ("uint16", np.uint16),
        ("uint32", np.uint32),
        ("uint64", np.uint64),
        ("bool", np.bool_),
    )
}


class OrtBackend:
    """Opens models as ONNX Runtime sessions on one device (see :class:`models.runtime.backend.Backend`).

    Args:
        device: ``"auto"`` (CUDA when it really loads, else CPU), ``"cpu"``, ``"cuda"`` (GPU 0) or
            ``"cuda:N"``; with ``options.providers`` set, only the GPU index is taken from it.
        intra_op_threads: ONNX Runtime's intra-op thread count; ``None`` lets it choose.
        options: I/O binding, the CUDA provider's options and the execution providers.

    Raises:
        InvalidArgumentError: a malformed device or thread count, or ``device="cpu"`` with
            providers other than the CPU one.
    """

    name = "onnxruntime"

    def __init__(
        self,
        *,
        device: Device = "auto",
        intra_op_threads: int | None = None,
        options: RuntimeOptions | None = None,
    ) -> None:
        self.kind, self.index = parse_device(device)
        if intra_op_threads is not None and (not isinstance(intra_op_threads, int) or intra_op_threads < 0):
            raise InvalidArgumentError(
                f"intra_op_threads must be a non-negative int or None, got {intra_op_threads!r}"
            )
        self.device = device
        self.intra_op_threads = intra_op_threads
        self.options = options or RuntimeOptions()
        others = [name for name in self.options.providers if name != CPU_PROVIDER]
        if self.kind == "cpu" and others:
            raise InvalidArgumentError(
                f"device='cpu' cannot run on the providers {others}; drop them or the device"
            )
        if self.kind == "cuda" and self.options.providers and CUDA_PROVIDER not in self.options.providers:
            raise InvalidArgumentError(
                f"device={device!r} needs {CUDA_PROVIDER} among the providers, got {list(self.options.providers)}"
            )

    def open(
        self,
        model: onnx.ModelProto,
        *,
        external_data_dir: Path | None = None,
        output_specs: OutputSpecs | None = None,
    ) -> OrtModel:
        """An :class:`OrtModel` of ``model`` (see :meth:`models.runtime.backend.Backend.open`)."""
        session = self._create_session(model.SerializeToString(), external_data_dir)
        return OrtModel(session, self.index, self.options, output_specs)

    def _create_session(self, model_bytes: bytes, external_data_dir: Path | None) -> ort.InferenceSession:
        device, kind, index, options = self.device, self.kind, self.index, self.options
        if kind == "cuda" and not cuda_loads():
            raise DeviceUnavailableError(
                f"device={device!r} was asked for, but the CUDA execution provider does not load on this host "
                f"(onnxruntime {ort.__version__} lists {ort.get_available_providers()}; it needs an NVIDIA "
                "driver plus the CUDA and cuDNN libraries, e.g. `pip install mollify[cuda]`); "
                "use device='cpu' or 'auto'"
            )
        if options.providers:
            check_providers(options.providers)
        session_options = ort.SessionOptions()
        session_options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # Exposed weights are initializers that are also graph inputs, which makes onnxruntime warn
        # once per weight at load; that is by design here (NoiseGrad overrides), so only errors are logged.
        session_options.log_severity_level = 3
        if self.intra_op_threads:
            session_options.intra_op_num_threads = self.intra_op_threads
        if external_data_dir is not None:
            # The model bytes hold references only; onnxruntime reads the weights from their files.
            session_options.add_session_config_entry(_EXTERNAL_DATA_FOLDER, str(external_data_dir))
        providers = session_providers(kind, index, options)
        try:
            session = ort.InferenceSession(model_bytes, sess_options=session_options, providers=providers)
        except Exception as err:
            if kind == "cuda" and "cuda" in str(err).lower():
                raise DeviceUnavailableError(
                    f"device={device!r}: the CUDA execution provider failed on GPU {index} ({err}); "
                    "check the GPU index (nvidia-smi -L) and the CUDA options"
                ) from err
            raise InvalidModelError(f"onnxruntime cannot load the model: {err}") from err
        running = session.get_providers()
        dropped = [name for name in options.providers if name not in running]
        if dropped:
            raise DeviceUnavailableError(
                f"the execution providers {list(options.providers)} were asked for, but the session fell back "
                f"to {running} (dropped: {dropped})"
            )
        if kind == "cuda" and not options.providers and running[0] != CUDA_PROVIDER:
            raise DeviceUnavailableError(
                f"device={device!r} was asked for, but the session fell back to {running}"
            )
        return session


class OrtModel:
    """One ONNX Runtime session (see :class:`models.runtime.backend.BackendModel`).

    Args:
        session: the session.
        device_index: the GPU the session runs on when its provider is CUDA.
        options: decides I/O binding (:meth:`RuntimeOptions.binds_io` of the provider in use).
        output_specs: the outputs to bind; without them, runs never bind.
    """

    def __init__(
        self,
        session: ort.InferenceSession,
        device_index: int,
        options: RuntimeOptions,
        output_specs: OutputSpecs | None,
    ) -> None:
        self._session = session
        provider = self.provider
        self._bound: _BoundRunner | None = None
        if output_specs and options.binds_io(provider):
            kind = "cuda" if provider == CUDA_PROVIDER else "cpu"
            self._bound = _BoundRunner(session, (kind, device_index if kind == "cuda" else 0), output_specs)

    @property
    def provider(self) -> str:
        """The execution provider really in use (read back from the session, never from the request)."""
        return str(self._session.get_providers()[0])

    @property
    def io_binding(self) -> bool:
        """Whether runs of the bound outputs go through I/O binding."""
        return self._bound is not None

    @property
    def idle_buffer_sets(self) -> int:
        """I/O-binding buffer sets kept for reuse now (0 without I/O binding)."""
        return 0 if self._bound is None else self._bound.idle_sets

    @property
    def inputs(self) -> list[TensorSpec]:
        return [_spec(value) for value in self._session.get_inputs()]

    @property
    def outputs(self) -> list[TensorSpec]:
        return [_spec(value) for value in self._session.get_outputs()]

    def run(self, names: Sequence[str], feed: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        if self._bound is not None and self._bound.binds(names):
            return self._bound.run(names, feed)
        return [np.asarray(value) for value in self._session.run(list(names), dict(feed))]


def _spec(value: ort.NodeArg) -> TensorSpec:
    shape = tuple(d if isinstance(d, (int, str)) else None for d in (value.shape or []))
    return TensorSpec(value.name, _ORT_DTYPES.get(value.type), shape)


class _Binding:
    """One I/O binding of a session with its device buffers: inputs and outputs of one set of shapes."""

    def __init__(
        self,
        session: ort.InferenceSession,
        device: tuple[str, int],
        inputs: Mapping[str, tuple[tuple[int, ...], np.dtype]],
        outputs: Mapping[str, tuple[tuple[int, ...], np.dtype]],
    ) -> None:
        kind, index = device
        self.binding = session.io_binding()
        self.inputs = {
            name: ort.OrtValue.ortvalue_from_shape_and_type(list(shape), dtype, kind, index)
            for name, (shape, dtype) in inputs.items()
        }
        self.outputs = {
            name: ort.OrtValue.ortvalue_from_shape_and_type(list(shape), dtype, kind, index)
            for name, (shape, dtype) in outputs.items()
        }
        for name, value in self.inputs.items():
            self.binding.bind_ortvalue_input(name, value)
        for name, value in self.outputs.items():
            self.binding.bind_ortvalue_output(name, value)


class _BoundRunner:
    """A session run through I/O binding (``run(names, feed)`` → list, as ``InferenceSession.run``).

    Every input (the batch, the cotangents, tiled extra inputs, weight overrides) is copied into a
    buffer on the session's device and every output is written by the session into one there; a
    set of buffers is bound once per shape and reused by every later call of that shape (the
    chunks of an explanation share one shape but the last). Calls from several threads at once
    each take a set of their own from a pool; at most ``max_idle`` idle sets are kept, least
    recently used dropped first. ``run_with_iobinding`` releases the GIL like ``run``, so the
    estimator's prefetch thread builds the next chunk's noise while this one runs.

    Args:
        session: the ONNX Runtime session.
        device: ``("cpu", 0)`` or ``("cuda", N)``, where the buffers live.
        output_shapes: each output's instance shape (without the batch) and dtype.
        max_idle: idle buffer sets kept for reuse.
    """

    def __init__(
        self,
        session: ort.InferenceSession,
        device: tuple[str, int],
        output_shapes: Mapping[str, tuple[tuple[int, ...], np.dtype]],
        max_idle: int = 4,
    ) -> None:
        self._session = session
        self._device = device
        self._output_shapes = dict(output_shapes)
        self._max_idle = max_idle
        self._idle: OrderedDict[tuple[object, ...], list[_Binding]] = OrderedDict()
        self._lock = threading.Lock()

    def binds(self, names: Sequence[str]) -> bool:
        """Whether every output in ``names`` has a known shape to bind."""
        return all(name in self._output_shapes for name in names)

    def run(self, names: Sequence[str], feed: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        arrays = {name: np.ascontiguousarray(value) for name, value in feed.items()}
        rows = next(iter(arrays.values())).shape[0] if arrays else 1
        inputs = {name: (tuple(value.shape), value.dtype) for name, value in arrays.items()}
        outputs = {
            name: ((rows, *self._output_shapes[name][0]), self._output_shapes[name][1]) for name in names
        }
        key = (tuple(sorted((n, s, d.str) for n, (s, d) in inputs.items())), tuple(names), rows)
        bound = self._take(key)
        if bound is None:
            bound = _Binding(self._session, self._device, inputs, outputs)
        try:
            for name, value in arrays.items():
                bound.inputs[name].update_inplace(value)
            self._session.run_with_iobinding(bound.binding)
            # A CPU buffer's numpy() is a view of it (the next call overwrites it); a CUDA one's a copy.
            copy = self._device[0] == "cpu"
            return [np.array(bound.outputs[name].numpy(), copy=copy) for name in names]
        finally:
            self._give_back(key, bound)

    def _take(self, key: tuple[object, ...]) -> _Binding | None:
        with self._lock:
            free = self._idle.get(key)
            if not free:
                return None
            self._idle.move_to_end(key)
            return free.pop()

    def _give_back(self, key: tuple[object, ...], bound: _Binding) -> None:
        with self._lock:
            self._idle.setdefault(key, []).append(bound)
            self._idle.move_to_end(key)
            while sum(len(free) for free in self._idle.values()) > self._max_idle:
                oldest = next(iter(self._idle))
                self._idle[oldest].pop(0)
                if not self._idle[oldest]:
                    del self._idle[oldest]

    @property
    def idle_sets(self) -> int:
        """Buffer sets kept for reuse now (for tests)."""
        with self._lock:
            return sum(len(free) for free in self._idle.values())
