"""ONNX Runtime sessions: the gradient model behind the estimator, and a plain forward session.

This is the only module of the project that imports onnxruntime. :class:`GradientSession` runs a
gradient model built by :func:`models.gradient_graph.build_gradient_model` and satisfies
:class:`estimator.gradient_model.GradientModel`; :class:`ForwardSession` runs any ONNX model
forward (benchmarks, predictions). Both pick the execution provider the same way: CUDA when it
really loads, else CPU. ``onnxruntime-gpu`` on a host without a GPU lists the CUDA provider as
available, logs an error when a session asks for it and silently runs on CPU, so the provider in
use is read back from the session rather than trusted from the request.
"""

from __future__ import annotations

import ctypes
import functools
import math
import os
import re
import threading
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType

import numpy as np
import onnx
import onnxruntime as ort

from estimator.errors import InvalidArgumentError, ModelEvaluationError
from estimator.gradient_model import GradientBatch
from models.gradient_graph import (
    GradientMetadata,
    InvalidModelError,
    load_model,
    read_gradient_metadata,
)
from models.gradient_graph.external_data import has_external_data, inline_small_tensors, map_tensor

__all__ = [
    "CPU_PROVIDER",
    "CUDA_PROVIDER",
    "Device",
    "DeviceUnavailableError",
    "ForwardSession",
    "GradientSession",
    "RuntimeOptions",
    "available_providers",
    "parse_device",
    "estimate_bytes_per_sample",
    "forward_model",
    "freeze_weights",
]

Device = str
"""``"auto"``, ``"cpu"``, ``"cuda"`` (GPU 0) or ``"cuda:N"`` (GPU N); see :func:`parse_device`."""
ModelSource = onnx.ModelProto | bytes | str | os.PathLike[str]

CPU_PROVIDER = "CPUExecutionProvider"
CUDA_PROVIDER = "CUDAExecutionProvider"

_DEVICES = ("auto", "cpu", "cuda", "cuda:N")
_CONV_ALGO_SEARCHES = ("EXHAUSTIVE", "HEURISTIC", "DEFAULT")
_IO_BINDINGS = ("auto", "on", "off")
_FLOAT_TYPES: dict[int, np.dtype] = {
    onnx.TensorProto.FLOAT: np.dtype(np.float32),
    onnx.TensorProto.DOUBLE: np.dtype(np.float64),
    onnx.TensorProto.FLOAT16: np.dtype(np.float16),
}
_ELEMENT_DTYPES: dict[int, np.dtype] = {
    **_FLOAT_TYPES,
    onnx.TensorProto.INT32: np.dtype(np.int32),
    onnx.TensorProto.INT64: np.dtype(np.int64),
    onnx.TensorProto.UINT8: np.dtype(np.uint8),
    onnx.TensorProto.BOOL: np.dtype(np.bool_),
}


# Measured: the peak RSS of a ResNet-18 (224²) gradient run grew by 17.3 MiB per sample (slope between
# N = 8 and N = 40) where the liveness walk of estimate_bytes_per_sample finds 15.6 MiB; the rest is
# convolution workspaces and blocked-layout copies. 1.25 keeps the estimate a little above that.
_MEMORY_HEADROOM = 1.25


class DeviceUnavailableError(RuntimeError):
    """``device="cuda"`` was asked for but the CUDA execution provider does not load on this host."""


# --------------------------------------------------------------------------- providers


@functools.lru_cache(maxsize=1)
def _cuda_loads() -> bool:
    """Whether a session really runs on CUDA here (probed once per process with a one-node model)."""
    if CUDA_PROVIDER not in ort.get_available_providers() or not _cuda_driver_present():
        return False
    graph = onnx.helper.make_graph(
        [onnx.helper.make_node("Identity", ["x"], ["y"])],
        "mollify_cuda_probe",
        [onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1])],
        [onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1])],
    )
    probe = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 13)])
    probe.ir_version = 8
    try:
        session = ort.InferenceSession(probe.SerializeToString(), providers=[CUDA_PROVIDER, CPU_PROVIDER])
    except Exception:
        return False
    return session.get_providers()[0] == CUDA_PROVIDER


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
    return [CUDA_PROVIDER, CPU_PROVIDER] if _cuda_loads() else [CPU_PROVIDER]


# onnxruntime's session option naming the folder of the external data of a model given as bytes.
_EXTERNAL_DATA_FOLDER = "session.model_external_initializers_file_folder_path"


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
    """

    io_binding: str = "auto"
    cudnn_conv_algo_search: str = "EXHAUSTIVE"
    gpu_mem_limit: int = 0
    allow_tf32: bool = False

    def __post_init__(self) -> None:
        if self.io_binding not in _IO_BINDINGS:
            raise InvalidArgumentError(f"io_binding must be one of {_IO_BINDINGS}, got {self.io_binding!r}")
        if self.cudnn_conv_algo_search not in _CONV_ALGO_SEARCHES:
            raise InvalidArgumentError(
                f"cudnn_conv_algo_search must be one of {_CONV_ALGO_SEARCHES}, got {self.cudnn_conv_algo_search!r}"
            )
        if not isinstance(self.gpu_mem_limit, int) or self.gpu_mem_limit < 0:
            raise InvalidArgumentError(f"gpu_mem_limit must be a byte count >= 0 (0: no limit), got {self.gpu_mem_limit!r}")

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


def _providers(kind: str, index: int, options: RuntimeOptions) -> list[str | tuple[str, dict[str, str]]]:
    """The ``providers`` argument of a session for a parsed device (CUDA only where it really loads)."""
    if kind != "cpu" and _cuda_loads():
        return [(CUDA_PROVIDER, options.cuda_provider_options(index)), CPU_PROVIDER]
    return [CPU_PROVIDER]


def _create_session(
    model_bytes: bytes,
    device: Device,
    intra_op_threads: int | None,
    external_data_dir: Path | None = None,
    options: RuntimeOptions | None = None,
) -> ort.InferenceSession:
    kind, index = parse_device(device)
    options = options or RuntimeOptions()
    if intra_op_threads is not None and (not isinstance(intra_op_threads, int) or intra_op_threads < 0):
        raise InvalidArgumentError(
            f"intra_op_threads must be a non-negative int or None, got {intra_op_threads!r}"
        )
    if kind == "cuda" and not _cuda_loads():
        raise DeviceUnavailableError(
            f"device={device!r} was asked for, but the CUDA execution provider does not load on this host "
            f"(onnxruntime {ort.__version__} lists {ort.get_available_providers()}; it needs an NVIDIA "
            "driver plus the CUDA and cuDNN libraries, e.g. `pip install mollify[cuda]`); use device='cpu' or 'auto'"
        )
    session_options = ort.SessionOptions()
    session_options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    # Exposed weights are initializers that are also graph inputs, which makes onnxruntime warn
    # once per weight at load; that is by design here (NoiseGrad overrides), so only errors are logged.
    session_options.log_severity_level = 3
    if intra_op_threads:
        session_options.intra_op_num_threads = intra_op_threads
    if external_data_dir is not None:
        # The model bytes hold references only; onnxruntime reads the weights from their files.
        session_options.add_session_config_entry(_EXTERNAL_DATA_FOLDER, str(external_data_dir))
    providers = _providers(kind, index, options)
    try:
        session = ort.InferenceSession(model_bytes, sess_options=session_options, providers=providers)
    except Exception as err:
        if kind == "cuda" and "cuda" in str(err).lower():
            raise DeviceUnavailableError(
                f"device={device!r}: the CUDA execution provider failed on GPU {index} ({err}); "
                "check the GPU index (nvidia-smi -L) and the CUDA options"
            ) from err
        raise InvalidModelError(f"onnxruntime cannot load the model: {err}") from err
    if kind == "cuda" and session.get_providers()[0] != CUDA_PROVIDER:
        raise DeviceUnavailableError(
            f"device={device!r} was asked for, but the session fell back to {session.get_providers()}"
        )
    return session


def _to_model(
    model: ModelSource, external_data_dir: str | os.PathLike[str] | None = None
) -> tuple[onnx.ModelProto, Path | None]:
    """The model and the folder of its external data (``None`` when it has none).

    A model read from a path keeps its external data in its files (its folder is returned), so a
    model over 2 GB is never copied into memory; onnxruntime reads the files itself.
    """
    folder = None if external_data_dir is None else Path(external_data_dir)
    if isinstance(model, (str, os.PathLike)):
        proto = load_model(model, external_data=False)
        folder = Path(model).parent
    elif isinstance(model, onnx.ModelProto):
        proto = model
    elif isinstance(model, (bytes, bytearray)):
        proto = load_model(model)
    else:
        raise InvalidArgumentError(
            f"model must be an onnx.ModelProto, bytes or a path, got {type(model).__name__}"
        )
    if not has_external_data(proto):
        return proto, None
    if folder is None:
        raise InvalidModelError(
            "the model references external data files but was given without their folder; "
            "pass its path, or external_data_dir"
        )
    if isinstance(model, onnx.ModelProto):
        # The caller's model stays as it is; without its weights in memory the copy is small.
        proto = onnx.ModelProto()
        proto.CopyFrom(model)
    # onnxruntime's shape inference cannot read shape constants from a file.
    inline_small_tensors(proto, folder)
    return proto, folder


# --------------------------------------------------------------------------- graph helpers


def _value_infos(graph: onnx.GraphProto) -> dict[str, onnx.ValueInfoProto]:
    return {value.name: value for value in [*graph.value_info, *graph.input, *graph.output]}


def _dims(value: onnx.ValueInfoProto) -> list[int | str | None]:
    """Dimensions of a tensor value: ints where static, the symbol where named, ``None`` where unknown."""
    shape = value.type.tensor_type.shape
    dims: list[int | str | None] = []
    for dim in shape.dim:
        if dim.HasField("dim_value"):
            dims.append(int(dim.dim_value))
        elif dim.HasField("dim_param"):
            dims.append(dim.dim_param)
        else:
            dims.append(None)
    return dims


def _instance_shape(value: onnx.ValueInfoProto, role: str) -> tuple[int, ...]:
    """The static non-batch shape of a batched graph input, or a clear error."""
    if not value.type.tensor_type.HasField("shape"):
        raise InvalidModelError(f"{role} {value.name!r} has no shape; pin it with input_shapes / --shape")
    dims = _dims(value)
    if not dims:
        raise InvalidModelError(f"{role} {value.name!r} is a scalar; expected a batch dimension first")
    rest = dims[1:]
    if not all(isinstance(d, int) for d in rest):
        raise InvalidModelError(
            f"{role} {value.name!r} has shape {dims}: every dimension after the batch must be static; "
            "pin it with input_shapes / --shape when building the gradient model"
        )
    return tuple(int(d) for d in rest)  # type: ignore[arg-type]


def _subgraph_inputs(node: onnx.NodeProto) -> set[str]:
    """Names a node's subgraphs (If / Loop / Scan bodies) read from the enclosing scope."""
    names: set[str] = set()
    for attribute in node.attribute:
        graphs = list(attribute.graphs)
        if attribute.HasField("g"):
            graphs.append(attribute.g)
        for graph in graphs:
            for inner in graph.node:
                names.update(inner.input)
                names.update(_subgraph_inputs(inner))
    return names


def forward_model(model: onnx.ModelProto, outputs: Sequence[str]) -> onnx.ModelProto:
    """The part of ``model`` needed to compute ``outputs``: nodes, inputs and initializers they depend on.

    Used to run the original outputs of a gradient model without feeding a cotangent, and to drop
    the nodes a gradient run does not need (onnxruntime would run them even when not asked for).
    Graph inputs that the kept nodes do not read are dropped too.
    """
    graph = model.graph
    producers = {name: node for node in graph.node for name in node.output if name}
    unknown = [
        name
        for name in outputs
        if name not in producers and name not in {v.name for v in graph.input}
        and name not in {i.name for i in graph.initializer}
    ]
    if unknown:
        raise InvalidModelError(f"outputs {unknown} are not tensors of the graph")
    needed: set[str] = set()
    kept: set[int] = set()
    stack = list(outputs)
    node_index = {id(node): i for i, node in enumerate(graph.node)}
    while stack:
        name = stack.pop()
        if name in needed:
            continue
        needed.add(name)
        node = producers.get(name)
        if node is not None and node_index[id(node)] not in kept:
            kept.add(node_index[id(node)])
            stack.extend(n for n in node.input if n)
            stack.extend(_subgraph_inputs(node))
    infos = _value_infos(graph)
    result = onnx.ModelProto()
    result.CopyFrom(model)
    new_graph = result.graph
    del new_graph.node[:]
    new_graph.node.extend(node for i, node in enumerate(graph.node) if i in kept)
    kept_inputs = [value for value in graph.input if value.name in needed]
    del new_graph.input[:]
    new_graph.input.extend(kept_inputs)
    kept_initializers = [init for init in graph.initializer if init.name in needed]
    del new_graph.initializer[:]
    new_graph.initializer.extend(kept_initializers)
    del new_graph.output[:]
    for name in outputs:
        output = onnx.ValueInfoProto()
        if name in infos:
            output.CopyFrom(infos[name])
        else:
            output.name = name
        new_graph.output.append(output)
    kept_value_info = [value for value in graph.value_info if value.name in needed]
    del new_graph.value_info[:]
    new_graph.value_info.extend(kept_value_info)
    return result


def freeze_weights(model: onnx.ModelProto, weights: Sequence[str]) -> onnx.ModelProto:
    """A copy of ``model`` in which the initializers ``weights`` are no longer graph inputs (constants)."""
    names = set(weights)
    if not names:
        return model
    frozen = onnx.ModelProto()
    frozen.CopyFrom(model)
    kept = [value for value in frozen.graph.input if value.name not in names]
    del frozen.graph.input[:]
    frozen.graph.input.extend(kept)
    return frozen


def estimate_bytes_per_sample(
    model: onnx.ModelProto,
    batch_inputs: Sequence[str],
    headroom: float = _MEMORY_HEADROOM,
    *,
    fixed_batch: int | None = None,
) -> int:
    """Estimate of the peak activation memory one sample adds to a run of ``model``, in bytes.

    Shape inference is run with the batch dimension of ``batch_inputs`` set to 1 and 2; a tensor
    whose size grows with the batch has that growth as its per-sample size. The nodes are then
    walked in graph order (forward, then the VJP nodes in reverse): a tensor is live from the node
    that makes it to its last consumer (graph outputs to the end), and the largest total of live
    per-sample sizes, times ``headroom`` for the workspaces and layout copies onnxruntime adds, is
    the estimate. Tensors whose shape cannot be inferred count at the mean known size.

    A model whose batch is fixed to ``fixed_batch`` rows (run that many rows per call) has static
    shapes: the peak of one call, divided by ``fixed_batch``, is the estimate.
    """
    per_sample: dict[str, int | None] = {}
    if fixed_batch is not None:
        per_sample = dict(_inferred_sizes(model, batch_inputs, None))
    else:
        sizes_1 = _inferred_sizes(model, batch_inputs, 1)
        sizes_2 = _inferred_sizes(model, batch_inputs, 2)
        for name in set(sizes_1) | set(sizes_2):
            one, two = sizes_1.get(name), sizes_2.get(name)
            per_sample[name] = None if one is None or two is None else max(0, two - one)
    known = [size for size in per_sample.values() if size]
    fallback = int(sum(known) / len(known)) if known else 0
    size = {name: fallback if value is None else value for name, value in per_sample.items()}

    graph = model.graph
    # The caller's input arrays and the graph outputs stay alive for the whole run.
    kept_to_end = {value.name for value in graph.output} | set(batch_inputs)
    last_use: dict[str, int] = {}
    for index, node in enumerate(graph.node):
        for name in [*node.input, *_subgraph_inputs(node)]:
            last_use[name] = index
    live = sum(size.get(name, 0) for name in set(batch_inputs))
    peak = live
    for index, node in enumerate(graph.node):
        outputs = [name for name in node.output if name]
        live += sum(size.get(name, 0) for name in outputs)
        peak = max(peak, live)
        released = {name for name in node.input if last_use.get(name) == index}
        released |= {name for name in outputs if name not in last_use}
        live -= sum(size.get(name, 0) for name in released - kept_to_end)
    return max(1, int(math.ceil(peak * headroom / (fixed_batch or 1))))


def _inferred_sizes(
    model: onnx.ModelProto, batch_inputs: Sequence[str], batch: int | None
) -> dict[str, int | None]:
    """Bytes of every tensor ``batch_inputs`` lead to, with their batch set to ``batch`` (``None``: as declared)."""
    # Only the structure matters for shape inference: the copy takes the nodes, never the weights.
    source = model.graph
    pinned = onnx.ModelProto(ir_version=model.ir_version)
    pinned.opset_import.extend(model.opset_import)
    pinned.functions.extend(model.functions)
    pinned.graph.name = source.name
    pinned.graph.node.extend(source.node)
    pinned.graph.input.extend(source.input)
    weight_shapes = {init.name: (list(init.dims), init.data_type) for init in source.initializer}
    initializer_inputs = {value.name for value in pinned.graph.input}
    for name, (dims, data_type) in weight_shapes.items():
        if name not in initializer_inputs:
            pinned.graph.input.append(onnx.helper.make_tensor_value_info(name, data_type, dims))
    for value in pinned.graph.input:
        if batch is not None and value.name in batch_inputs and value.type.tensor_type.shape.dim:
            value.type.tensor_type.shape.dim[0].dim_value = batch
    try:
        inferred = onnx.shape_inference.infer_shapes(pinned, data_prop=True)
    except Exception:
        inferred = pinned
    sizes: dict[str, int | None] = {}
    produced = {name for node in model.graph.node for name in node.output if name}
    for value in [*inferred.graph.input, *inferred.graph.value_info]:
        if value.name in weight_shapes or (value.name not in produced and value.name not in batch_inputs):
            continue
        sizes[value.name] = _tensor_bytes(value)
    for name in produced:
        sizes.setdefault(name, None)
    return sizes


def _tensor_bytes(value: onnx.ValueInfoProto) -> int | None:
    tensor_type = value.type.tensor_type
    if not tensor_type.HasField("shape"):
        return None
    dims = _dims(value)
    if not all(isinstance(d, int) for d in dims):
        return None
    try:
        itemsize = onnx.helper.tensor_dtype_to_np_dtype(tensor_type.elem_type).itemsize
    except Exception:
        return None
    return int(np.prod(dims, dtype=np.int64)) * itemsize  # type: ignore[arg-type]


# --------------------------------------------------------------------------- sessions


class _RunnerAdapter:
    """A :class:`ForwardSession` seen as an ``InferenceSession`` (``run(names, feed)`` → list)."""

    def __init__(self, forward: ForwardSession) -> None:
        self._forward = forward

    def run(self, names: Sequence[str], feed: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        results = self._forward.run(feed, names)
        return [results[name] for name in names]


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

    def run(self, names: Sequence[str], feed: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        arrays = {name: np.ascontiguousarray(value) for name, value in feed.items()}
        rows = next(iter(arrays.values())).shape[0] if arrays else 1
        inputs = {name: (tuple(value.shape), value.dtype) for name, value in arrays.items()}
        outputs = {name: ((rows, *self._output_shapes[name][0]), self._output_shapes[name][1]) for name in names}
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


def _run_in_batches(
    session: ort.InferenceSession | _RunnerAdapter | _BoundRunner,
    names: Sequence[str],
    feed: Mapping[str, np.ndarray],
    batched: Sequence[str],
    size: int | None,
    zero_padded: Sequence[str] | None = None,
) -> list[np.ndarray]:
    """Run ``session`` on ``feed``, ``size`` rows of the ``batched`` inputs per call (all at once if ``None``).

    A model with a fixed batch takes exactly ``size`` rows: the last call is padded (the inputs
    with copies of their last row, so the padding is valid data; those in ``zero_padded``, default
    every batched input after the first (the cotangent), with zeros) and the padded rows' results
    are dropped. Every output must have the batch as its first dimension.
    """
    zeros = set(batched[1:] if zero_padded is None else zero_padded)
    rows = int(feed[batched[0]].shape[0])
    if size is None or rows == size:
        return [np.asarray(value) for value in session.run(list(names), dict(feed))]
    parts: list[list[np.ndarray]] = [[] for _ in names]
    for start in range(0, rows, size):
        stop = min(start + size, rows)
        call = dict(feed)
        for name in batched:
            block = feed[name][start:stop]
            if stop - start < size:
                # Padding rows: the input repeats the last real row (valid data), the cotangent is zero.
                fill = np.repeat(block[-1:], size - (stop - start), axis=0)
                if name in zeros:
                    fill = np.zeros_like(fill)
                block = np.concatenate([block, fill])
            call[name] = np.ascontiguousarray(block)
        for index, value in enumerate(session.run(list(names), call)):
            parts[index].append(np.asarray(value)[: stop - start])
    return [np.concatenate(chunks) for chunks in parts]



class ForwardSession:
    """A plain ONNX Runtime session over an ordinary ONNX model (the forward pass).

    Args:
        model: a model, its serialized bytes, or a path to a ``.onnx`` file (external data beside it).
        device: ``"auto"`` (CUDA when it really loads, else CPU), ``"cpu"``, ``"cuda"`` or ``"cuda:N"``.
        intra_op_threads: ONNX Runtime's intra-op thread count; ``None`` lets it choose.
        external_data_dir: for a ``ModelProto`` referencing external data files: their folder.
        options: the CUDA provider's options (see :class:`RuntimeOptions`).
    """

    def __init__(
        self,
        model: ModelSource,
        *,
        device: Device = "auto",
        intra_op_threads: int | None = None,
        external_data_dir: str | os.PathLike[str] | None = None,
        options: RuntimeOptions | None = None,
    ) -> None:
        proto, folder = _to_model(model, external_data_dir)
        self._session = _create_session(proto.SerializeToString(), device, intra_op_threads, folder, options)
        self._required = [
            value.name
            for value in proto.graph.input
            if value.name not in {init.name for init in proto.graph.initializer}
        ]

    @property
    def provider(self) -> str:
        """The execution provider really in use (``"CUDAExecutionProvider"`` or ``"CPUExecutionProvider"``)."""
        return str(self._session.get_providers()[0])

    @property
    def input_names(self) -> list[str]:
        """Inputs that must be fed (graph inputs without an initializer default)."""
        return list(self._required)

    @property
    def output_names(self) -> list[str]:
        return [output.name for output in self._session.get_outputs()]

    def run(
        self, feed: np.ndarray | Mapping[str, np.ndarray], outputs: Sequence[str] | None = None
    ) -> dict[str, np.ndarray]:
        """Run the model.

        Args:
            feed: one array when the model has a single required input, else a name → array mapping.
            outputs: names of the outputs to return; default: every graph output.

        Returns:
            Output name → array.
        """
        if isinstance(feed, np.ndarray):
            if len(self._required) != 1:
                raise InvalidArgumentError(
                    f"feed must be a mapping for a model with inputs {self._required}, got one array"
                )
            feed = {self._required[0]: feed}
        missing = [name for name in self._required if name not in feed]
        if missing:
            raise InvalidArgumentError(f"feed lacks the inputs {missing}; the model needs {self._required}")
        names = list(outputs) if outputs is not None else self.output_names
        try:
            values = self._session.run(names, dict(feed))
        except Exception as err:
            raise ModelEvaluationError(f"onnxruntime failed to run the model: {err}") from err
        return {name: np.asarray(value) for name, value in zip(names, values, strict=True)}


class GradientSession:
    """A gradient model run by ONNX Runtime, as a :class:`estimator.gradient_model.GradientModel`.

    One call on a batch of ``B`` inputs and ``B`` cotangents returns the explained tensor and
    ``J^T · cotangent`` for every sample (reverse mode over the ONNX graph, models.gradient_graph).

    Performance notes (measured on the 2-core CPU host): calls without weight overrides run a session
    in which the weights are constants, which made the ResNet-18 gradient graph about 25% faster
    (1.57 s vs 2.10 s at N = 50) than with the weights as overridable inputs; the first call with
    overrides opens a second session over the overridable graph (the weights are then held twice).
    On CPU, plain ``InferenceSession.run`` was as fast as IO binding with pre-allocated outputs
    (digits CNN: 1.53 ms vs 1.59 ms at N = 50, 0.046 ms vs 0.054 ms at N = 1), so it is used there
    by default; CUDA sessions use I/O binding (device buffers reused across calls of one shape,
    see :class:`RuntimeOptions`), which gives the same numbers bit for bit.

    A model whose batch is fixed (exported without a dynamic batch axis; metadata ``batching ==
    "fixed"``) is run ``batch_size`` rows per ONNX Runtime call, the last call padded with copies of
    its last row whose results are dropped, so callers may pass any number of rows.

    Args:
        model: a gradient model (built by :func:`models.gradient_graph.build_gradient_model` or
            ``mollify gradify``), its bytes, or a path to it (external data files beside it stay
            on disk: onnxruntime reads them, and :attr:`weights` maps them read-only).
        input_name: the differentiated input to use; default: the only one the model has.
        device: ``"auto"`` (CUDA when it really loads, else CPU), ``"cpu"``, ``"cuda"`` (GPU 0) or
            ``"cuda:N"`` (raises :class:`DeviceUnavailableError` when CUDA does not load).
        intra_op_threads: ONNX Runtime's intra-op thread count; ``None`` lets it choose.
        external_data_dir: for a ``ModelProto`` referencing external data files: their folder.
        extra_inputs: other graph inputs fed with every call (an attention mask, token ids read
            only for their shape): one instance each, repeated for every row (see :meth:`__call__`).
        options: I/O binding and the CUDA provider's options (see :class:`RuntimeOptions`).

    Raises:
        InvalidModelError: the model has no gradient metadata, needs inputs this wrapper cannot feed,
            or has a non-static instance shape.
    """

    def __init__(
        self,
        model: ModelSource,
        *,
        input_name: str | None = None,
        device: Device = "auto",
        intra_op_threads: int | None = None,
        external_data_dir: str | os.PathLike[str] | None = None,
        extra_inputs: Sequence[str] = (),
        options: RuntimeOptions | None = None,
    ) -> None:
        proto, folder = _to_model(model, external_data_dir)
        self._options = options or RuntimeOptions()
        self._external_data_dir = folder
        self._extra_names = tuple(extra_inputs)
        metadata = read_gradient_metadata(proto)
        self._metadata = metadata
        self._input_name = self._choose_input(metadata, input_name)
        self._gradient_name = metadata.gradients[self._input_name]
        graph = proto.graph
        inputs = {value.name: value for value in graph.input}
        initializers = {init.name: init for init in graph.initializer}
        self._check_feedable(inputs, initializers, metadata)
        self._input_dtype = self._float_dtype(inputs[self._input_name], "input")
        self._cotangent_dtype = self._float_dtype(inputs[metadata.cotangent], "cotangent")
        self._input_shape = _instance_shape(inputs[self._input_name], "input")
        self._output_shape = _instance_shape(inputs[metadata.cotangent], "cotangent")
        self._extra_specs = {
            name: (_ELEMENT_DTYPES.get(inputs[name].type.tensor_type.elem_type), _instance_shape(inputs[name], "input"))
            for name in self._extra_names
        }
        weights: dict[str, np.ndarray] = {}
        for name in metadata.weights:
            if name not in initializers:
                raise InvalidModelError(f"metadata lists the weight {name!r}, which is not an initializer")
            weights[name] = map_tensor(initializers[name], folder)
        self._weights = MappingProxyType(weights)
        self._original_outputs = [
            output.name for output in graph.output if output.name not in set(metadata.gradients.values())
        ]
        self._model = proto
        self._device: Device = device
        self._intra_op_threads = intra_op_threads
        # Two sessions over one graph: the clean one sees the weights as constants, so onnxruntime
        # may pre-pack them and pick its blocked-layout convolutions; a weight that is also a graph
        # input is never constant to it. The overridable one is opened on the first override.
        # onnxruntime runs every node of a graph whatever outputs are asked for, so the sessions get
        # only the part that computes the explained tensor and the gradient (no Softmax head, no labels).
        self._frozen = freeze_weights(proto, metadata.weights)
        wanted = [metadata.explained, self._gradient_name]
        self._session = _create_session(
            forward_model(self._frozen, wanted).SerializeToString(), device, intra_op_threads, folder, self._options
        )
        self._runners: dict[int, _BoundRunner] = {}
        self._override_session: ort.InferenceSession | None = None
        self._override_inputs: set[str] = set()
        self._forward: ForwardSession | None = None
        self._bytes_per_sample: int | None = None

    @staticmethod
    def _choose_input(metadata: GradientMetadata, input_name: str | None) -> str:
        differentiated = list(metadata.gradients)
        if input_name is None:
            if len(differentiated) != 1:
                raise InvalidArgumentError(
                    f"input_name must pick one of the differentiated inputs {differentiated}, got None"
                )
            return differentiated[0]
        if input_name not in metadata.gradients:
            raise InvalidArgumentError(
                f"input_name must be one of the differentiated inputs {differentiated}, got {input_name!r}"
            )
        return input_name

    def _check_feedable(
        self,
        inputs: Mapping[str, onnx.ValueInfoProto],
        initializers: Mapping[str, onnx.TensorProto],
        metadata: GradientMetadata,
    ) -> None:
        if metadata.cotangent not in inputs:
            raise InvalidModelError(f"the cotangent input {metadata.cotangent!r} is not a graph input")
        fed = {self._input_name, metadata.cotangent, *self._extra_names}
        unknown = [name for name in self._extra_names if name not in inputs or name in initializers]
        if unknown:
            raise InvalidModelError(f"extra_inputs {unknown} are not graph inputs of the gradient model")
        others = [name for name in inputs if name not in fed and name not in initializers]
        if others:
            raise InvalidModelError(
                f"the gradient model needs the inputs {others} besides {self._input_name!r} and the "
                "cotangent; GradientSession feeds one input: rebuild the gradient model with only "
                f"{self._input_name!r} as a graph input (e.g. fold the others into constants)"
            )

    @staticmethod
    def _float_dtype(value: onnx.ValueInfoProto, role: str) -> np.dtype:
        elem_type = value.type.tensor_type.elem_type
        if elem_type not in _FLOAT_TYPES:
            raise InvalidModelError(
                f"{role} {value.name!r} must be a float tensor, got element type "
                f"{onnx.TensorProto.DataType.Name(elem_type)}"
            )
        return _FLOAT_TYPES[elem_type]

    # GradientModel ------------------------------------------------------------------

    @property
    def input_shape(self) -> tuple[int, ...]:
        """Shape of one input instance, without the batch dimension."""
        return self._input_shape

    @property
    def output_shape(self) -> tuple[int, ...]:
        """Shape of one instance of the explained tensor, without the batch dimension."""
        return self._output_shape

    @property
    def weights(self) -> Mapping[str, np.ndarray]:
        """Clean float weights that :meth:`__call__` may override, by name (read-only arrays)."""
        return self._weights

    @property
    def bytes_per_sample(self) -> int:
        """Estimated activation memory of one sample in a gradient run, in bytes.

        The peak of the per-sample sizes of the tensors alive at once while the graph runs, with
        headroom for onnxruntime's workspaces (see :func:`estimate_bytes_per_sample`; ResNet-18 at
        224²: estimate 20.2 MiB, measured peak-RSS growth 17.3 MiB per sample). Computed on first use.
        """
        if self._bytes_per_sample is None:
            self._bytes_per_sample = estimate_bytes_per_sample(
                self._model,
                [self._input_name, self._metadata.cotangent],
                fixed_batch=self._metadata.batch_size,
            )
        return self._bytes_per_sample

    def __call__(
        self,
        inputs: np.ndarray,
        cotangents: np.ndarray,
        weight_overrides: Mapping[str, np.ndarray] | None = None,
        *,
        extras: Mapping[str, np.ndarray] | None = None,
    ) -> GradientBatch:
        """Run the model and its gradient graph on a batch.

        Args:
            inputs: ``(B, *input_shape)`` float array (cast to the model's float type, float32 usually).
            cotangents: ``(B, *output_shape)`` float array; row b weights the explained tensor of sample b.
            weight_overrides: replacement values for some of :attr:`weights` (same shapes, float), for this
                call only; ``None`` runs with the clean weights.
            extras: one instance (no batch dimension) of each of the session's ``extra_inputs``,
                repeated for all ``B`` rows; required when it has any.

        Returns:
            ``GradientBatch(outputs (B, *output_shape), gradients (B, *input_shape))``, float32.

        Raises:
            InvalidArgumentError: a shape, dtype or weight name is wrong (the message says which).
            ModelEvaluationError: ONNX Runtime failed to run the graph.
        """
        x = self._checked_array(inputs, "inputs", self._input_shape, self._input_dtype)
        w = self._checked_array(cotangents, "cotangents", self._output_shape, self._cotangent_dtype)
        if w.shape[0] != x.shape[0]:
            raise InvalidArgumentError(
                f"cotangents must have the batch size of inputs ({x.shape[0]}), got {w.shape[0]}"
            )
        feed: dict[str, np.ndarray] = {self._input_name: x, self._metadata.cotangent: w}
        feed.update(self._tiled_extras(extras, x.shape[0]))
        overrides = self._checked_overrides(weight_overrides)
        session = self._session
        if overrides:
            if self._override_session is None:
                pruned = forward_model(self._model, [self._metadata.explained, self._gradient_name])
                self._override_session = _create_session(
                    pruned.SerializeToString(), self._device, self._intra_op_threads, self._external_data_dir,
                    self._options,
                )
                self._override_inputs = {value.name for value in pruned.graph.input}
            # Weights that only feed other outputs (a head past the explained tensor) are not in
            # the pruned graph; overriding them cannot change this result.
            used = {name: value for name, value in overrides.items() if name in self._override_inputs}
            if used:
                feed.update(used)
                session = self._override_session
        wanted = [self._metadata.explained, self._gradient_name]
        # Pruning may have dropped an extra input the explained tensor does not need.
        if self._extra_names:
            accepted = {value.name for value in session.get_inputs()}
            feed = {name: value for name, value in feed.items() if name not in self._extra_names or name in accepted}
        extras_fed = [name for name in self._extra_names if name in feed]
        try:
            outputs, gradients = _run_in_batches(
                self._runner(session), wanted, feed, [self._input_name, self._metadata.cotangent, *extras_fed],
                self._metadata.batch_size, zero_padded=[self._metadata.cotangent],
            )
        except Exception as err:
            raise ModelEvaluationError(f"onnxruntime failed to run the gradient graph: {err}") from err
        return GradientBatch(
            outputs=np.asarray(outputs, dtype=np.float32), gradients=np.asarray(gradients, dtype=np.float32)
        )

    def _runner(self, session: ort.InferenceSession) -> ort.InferenceSession | _BoundRunner:
        """``session`` itself, or its I/O-binding runner when :attr:`io_binding` is on."""
        if not self.io_binding:
            return session
        runner = self._runners.get(id(session))
        if runner is None:
            kind = "cuda" if session.get_providers()[0] == CUDA_PROVIDER else "cpu"
            index = parse_device(self._device)[1] if kind == "cuda" else 0
            shapes = {
                self._metadata.explained: (self._output_shape, self._cotangent_dtype),
                self._gradient_name: (self._input_shape, self._input_dtype),
            }
            runner = self._runners.setdefault(id(session), _BoundRunner(session, (kind, index), shapes))
        return runner

    # Extras -------------------------------------------------------------------------

    @property
    def io_binding(self) -> bool:
        """Whether calls run through I/O binding (:class:`RuntimeOptions`: ``auto`` is on for CUDA)."""
        return self._options.binds_io(self.provider)

    @property
    def batching(self) -> str:
        """``"dynamic"``, ``"symbolic"`` (a fixed export batch made symbolic, checked) or ``"fixed"``."""
        return self._metadata.batching

    @property
    def fixed_batch_size(self) -> int | None:
        """The rows per ONNX Runtime call when :attr:`batching` is ``"fixed"``, else ``None``."""
        return self._metadata.batch_size

    @property
    def input_name(self) -> str:
        """The differentiated graph input fed by :meth:`__call__`."""
        return self._input_name

    @property
    def explained_name(self) -> str:
        """The tensor whose cotangent :meth:`__call__` takes (e.g. pre-Softmax ``logits``)."""
        return self._metadata.explained

    @property
    def gradient_name(self) -> str:
        """The graph output holding ``J^T · cotangent`` for :attr:`input_name`."""
        return self._gradient_name

    @property
    def metadata(self) -> GradientMetadata:
        return self._metadata

    @property
    def provider(self) -> str:
        """The execution provider really in use (``"CUDAExecutionProvider"`` or ``"CPUExecutionProvider"``)."""
        return str(self._session.get_providers()[0])

    @property
    def output_names(self) -> list[str]:
        """The original model's outputs (and the explained tensor), as :meth:`run_outputs` returns them."""
        return list(self._original_outputs)

    def run_outputs(self, inputs: np.ndarray) -> dict[str, np.ndarray]:
        """Run the forward part only (no cotangent, no VJP) and return every non-gradient output.

        Args:
            inputs: ``(B, *input_shape)`` float array.

        Returns:
            Output name → array with a leading batch dimension, e.g. ``{"probabilities": (B, 10), "logits": (B, 10)}``.
        """
        x = self._checked_array(inputs, "inputs", self._input_shape, self._input_dtype)
        if self._forward is None:
            self._forward = ForwardSession(
                forward_model(self._frozen, self._original_outputs),
                device=self._device,
                intra_op_threads=self._intra_op_threads,
                external_data_dir=self._external_data_dir,
                options=self._options,
            )
        forward = self._forward
        names = forward.output_names
        results = _run_in_batches(
            _RunnerAdapter(forward), names, {self._input_name: x}, [self._input_name], self._metadata.batch_size
        )
        return dict(zip(names, results, strict=True))

    # Validation ---------------------------------------------------------------------

    @staticmethod
    def _checked_array(
        array: np.ndarray, field: str, instance_shape: tuple[int, ...], dtype: np.dtype
    ) -> np.ndarray:
        if not isinstance(array, np.ndarray):
            raise InvalidArgumentError(f"{field} must be a numpy array, got {type(array).__name__}")
        if array.dtype.kind != "f":
            raise InvalidArgumentError(f"{field} must have a float dtype, got {array.dtype}")
        expected = ("B", *instance_shape)
        if array.ndim != len(expected) or tuple(array.shape[1:]) != instance_shape:
            raise InvalidArgumentError(f"{field} must have shape {expected}, got {array.shape}")
        if array.shape[0] < 1:
            raise InvalidArgumentError(f"{field} must hold at least one sample, got batch size 0")
        return np.ascontiguousarray(array, dtype=dtype)

    def _tiled_extras(self, extras: Mapping[str, np.ndarray] | None, rows: int) -> dict[str, np.ndarray]:
        """The extra inputs, one instance each, repeated for ``rows`` rows in the graph's dtypes."""
        given = dict(extras or {})
        missing = [name for name in self._extra_names if name not in given]
        unknown = sorted(set(given) - set(self._extra_names))
        if missing or unknown:
            raise InvalidArgumentError(
                f"extras must hold exactly the inputs {list(self._extra_names)}; missing {missing}, unknown {unknown}"
            )
        tiled: dict[str, np.ndarray] = {}
        for name, (dtype, shape) in self._extra_specs.items():
            value = np.asarray(given[name])
            if tuple(value.shape) != shape:
                raise InvalidArgumentError(f"extras[{name!r}] must have shape {shape}, got {value.shape}")
            value = value.astype(dtype, copy=False) if dtype is not None else value
            tiled[name] = np.ascontiguousarray(np.broadcast_to(value[None], (rows, *shape)))
        return tiled

    @property
    def extra_inputs(self) -> tuple[str, ...]:
        """The graph inputs besides the differentiated one fed with every call."""
        return self._extra_names

    def _checked_overrides(self, overrides: Mapping[str, np.ndarray] | None) -> dict[str, np.ndarray]:
        if not overrides:
            return {}
        feed: dict[str, np.ndarray] = {}
        for name, value in overrides.items():
            if name not in self._weights:
                known = sorted(self._weights)
                shown = ", ".join(known[:8]) + (", ..." if len(known) > 8 else "")
                raise InvalidArgumentError(
                    f"weight_overrides names {name!r}, which is not an overridable weight (known: {shown})"
                )
            clean = self._weights[name]
            array = np.asarray(value)
            if not np.issubdtype(array.dtype, np.floating):
                raise InvalidArgumentError(
                    f"weight_overrides[{name!r}] must have a float dtype, got {array.dtype}"
                )
            if array.shape != clean.shape:
                raise InvalidArgumentError(
                    f"weight_overrides[{name!r}] must have shape {clean.shape}, got {array.shape}"
                )
            feed[name] = np.ascontiguousarray(array, dtype=clean.dtype)
        return feed

