"""Turn an ONNX model file into a gradient-model file, and check that ONNX Runtime runs it.

The library side of ``mollify gradify``: :func:`gradify` loads, differentiates
(:func:`models.gradient_graph.build_gradient_model`) and writes; :func:`summarize` describes the
result; :func:`check_gradient_model` loads it in a :class:`models.runtime.GradientSession` and runs
one sample. Imports onnx and numpy; onnxruntime only through :mod:`models.runtime`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx

from models.gradient_graph import (
    GradientMetadata,
    InvalidModelError,
    build_gradient_model,
    load_model,
    read_gradient_metadata,
)
from models.gradient_graph.external_data import save_model

__all__ = [
    "GradientModelSummary",
    "SessionCheck",
    "TensorSummary",
    "check_gradient_model",
    "gradify",
    "summarize",
]

_MAX_IR_VERSION = 10


def gradify(
    src: str | os.PathLike[str] | bytes | onnx.ModelProto,
    dst: str | os.PathLike[str],
    inputs: Sequence[str] | None = None,
    explained: str | None = None,
    shapes: Mapping[str, Sequence[int]] | None = None,
) -> GradientMetadata:
    """Build the gradient model of ``src`` and write it to ``dst``.

    Args:
        src: the ONNX model (path, bytes or proto). From a path, external data files beside it
            (``model.onnx.data``, as ``torch.onnx.export`` writes) are read where they lie.
        dst: where to write the gradient model; parent folders are created. A model with external
            data gets copies of its data files beside ``dst`` (``<dst name>.data``); one larger than
            ``external_data.INLINE_LIMIT_BYTES`` is written with its weights in ``<dst name>.data``;
            any other is one self-contained file.
        inputs: float graph inputs to differentiate; default: every float graph input. One float
            tensor computed inside the graph (an embedding output, a feature map) instead writes the
            gradient model of the part of the graph after it (:func:`models.cut.cut_model`), with
            that tensor as its differentiated input and the graph inputs that part still reads (an
            attention mask) as plain inputs; its instance shape comes from shape inference or
            ``shapes``.
        explained: the tensor to explain (any graph tensor, e.g. pre-Softmax logits); default: the
            first graph output.
        shapes: per input, the shape of one instance without the batch dimension, e.g.
            ``{"input": (1, 8, 8)}``; pins symbolic dimensions that the VJP rules need static.

    Returns:
        The metadata of the written gradient model.

    Raises:
        models.gradient_graph.GradientGraphError: the model is invalid or an op on the
            differentiated path has no VJP rule (``UnsupportedOpError``).
    """
    folder = Path(src).parent if isinstance(src, str | os.PathLike) else None
    if isinstance(src, onnx.ModelProto):
        model = src
    else:
        model = load_model(src, external_data=False) if folder is not None else load_model(src)
    graph_inputs = {value.name for value in model.graph.input}
    inside = [name for name in inputs or () if name not in graph_inputs]
    if inside:
        model, shapes = _cut_at(model, list(inputs or ()), inside[0], explained, shapes)
    gradient = build_gradient_model(model, inputs, explained, input_shapes=shapes, external_data_dir=folder)
    gradient.ir_version = min(gradient.ir_version, _MAX_IR_VERSION)
    metadata = read_gradient_metadata(gradient)
    save_model(gradient, dst, external_data_dir=folder)
    return metadata


def _cut_at(
    model: onnx.ModelProto,
    inputs: Sequence[str],
    tensor: str,
    explained: str | None,
    shapes: Mapping[str, Sequence[int]] | None,
) -> tuple[onnx.ModelProto, dict[str, Sequence[int]]]:
    """The part of ``model`` after ``tensor`` and the instance shapes to pin in it."""
    from models.cut import cut_model, inferred_instance_shape

    if len(inputs) != 1:
        raise InvalidModelError(
            f"--input {tensor!r} is a tensor computed inside the graph; it is differentiated alone: give it as the "
            f"only --input (got {list(inputs)})"
        )
    target = explained or (model.graph.output[0].name if model.graph.output else "")
    cut_model(model, tensor, target)  # refusals first: a missing, integer or unrelated tensor
    pins = dict(shapes or {})
    instance = pins.get(tensor) or inferred_instance_shape(model, tensor, pins)
    if instance is None:
        raise InvalidModelError(
            f"the instance shape of {tensor!r} is not static after shape inference; pin it with --shape "
            f"{tensor}=DIMS (one instance, no batch)"
        )
    cut = cut_model(model, tensor, target, tuple(instance))
    kept = {name: dims for name, dims in pins.items() if name in cut.suffix_inputs}
    return cut.suffix, {**kept, tensor: tuple(instance)}


@dataclass(frozen=True)
class TensorSummary:
    """A graph tensor: its name, element type name and shape (ints, symbols, or ``"?"``)."""

    name: str
    dtype: str
    shape: tuple[int | str, ...]

    def __str__(self) -> str:
        dims = "x".join(str(d) for d in self.shape) if self.shape else "scalar"
        return f"{self.name} {self.dtype}[{dims}]"


@dataclass(frozen=True)
class GradientModelSummary:
    """What a gradient model takes and gives."""

    inputs: tuple[TensorSummary, ...]
    explained: TensorSummary
    cotangent: TensorSummary
    gradients: tuple[TensorSummary, ...]
    outputs: tuple[TensorSummary, ...]
    weight_count: int
    weight_elements: int
    opset: int
    batching: str = "dynamic"
    batch_size: int | None = None

    def lines(self) -> list[str]:
        """Human-readable lines, as ``mollify gradify`` prints them."""
        text = [f"opset {self.opset}"]
        if self.batching == "fixed":
            rows = f"{self.batch_size} row{'' if self.batch_size == 1 else 's'}"
            text.append(f"batch      fixed by the graph (no dynamic batch axis): {rows} per run")
        elif self.batching == "symbolic":
            text.append("batch      declared fixed, checked to work for any size: made symbolic")
        text += [f"input      {t}" for t in self.inputs]
        text.append(f"explained  {self.explained}")
        text.append(f"cotangent  {self.cotangent}")
        text += [f"gradient   {t}" for t in self.gradients]
        text += [f"output     {t}" for t in self.outputs]
        text.append(f"weights    {self.weight_count} overridable tensors, {self.weight_elements:,} values")
        return text


def summarize(model: onnx.ModelProto) -> GradientModelSummary:
    """Describe a gradient model's inputs, explained tensor, cotangent, gradients, outputs and weights."""
    metadata = read_gradient_metadata(model)
    graph = model.graph
    values = {v.name: v for v in [*graph.value_info, *graph.input, *graph.output]}
    sizes = {init.name: int(np.prod(init.dims, dtype=np.int64)) for init in graph.initializer}
    gradient_outputs = set(metadata.gradients.values())

    def tensor(name: str) -> TensorSummary:
        value = values.get(name)
        if value is None or not value.type.HasField("tensor_type"):
            return TensorSummary(name, "?", ())
        tensor_type = value.type.tensor_type
        dtype = onnx.TensorProto.DataType.Name(tensor_type.elem_type).lower()
        shape: tuple[int | str, ...] = ()
        if tensor_type.HasField("shape"):
            shape = tuple(
                int(d.dim_value) if d.HasField("dim_value") else (d.dim_param or "?")
                for d in tensor_type.shape.dim
            )
        return TensorSummary(name, dtype, shape)

    return GradientModelSummary(
        inputs=tuple(tensor(name) for name in metadata.inputs),
        explained=tensor(metadata.explained),
        cotangent=tensor(metadata.cotangent),
        gradients=tuple(tensor(metadata.gradients[name]) for name in metadata.inputs),
        outputs=tuple(
            tensor(v.name)
            for v in graph.output
            if v.name not in gradient_outputs and v.name != metadata.explained
        ),
        weight_count=len(metadata.weights),
        weight_elements=sum(sizes.get(name, 0) for name in metadata.weights),
        opset=int(metadata.opset),
        batching=metadata.batching,
        batch_size=metadata.batch_size,
    )


@dataclass(frozen=True)
class SessionCheck:
    """The outcome of loading a gradient model in ONNX Runtime and running one sample per input.

    Attributes:
        provider: the execution provider really in use.
        available: the providers that really load on this host.
        bytes_per_sample: the session's activation-memory estimate per sample.
        finite: whether the sample's outputs and gradients were all finite.
    """

    provider: str
    available: tuple[str, ...]
    bytes_per_sample: int
    finite: bool

    def lines(self) -> list[str]:
        state = "finite" if self.finite else "NOT finite (check the model)"
        return [
            f"provider   {self.provider} (available: {', '.join(self.available)})",
            f"memory     ~{_human_bytes(self.bytes_per_sample)} per sample in a gradient run",
            f"smoke run  one sample at zero input, unit cotangent: outputs and gradients {state}",
        ]


def check_gradient_model(
    model: str | os.PathLike[str] | onnx.ModelProto, device: str = "auto"
) -> SessionCheck:
    """Load a gradient model in ONNX Runtime and run one all-zero sample with a ones cotangent.

    Raises:
        InvalidModelError: ONNX Runtime cannot load the model, or an instance shape is not static.
        estimator.errors.ModelEvaluationError: the run failed.
    """
    from models.runtime import ForwardSession, available_providers, estimate_bytes_per_sample

    if device not in ("auto", "cpu", "cuda"):
        raise InvalidModelError(f"device must be 'auto', 'cpu' or 'cuda', got {device!r}")
    # From a path, external data stays in its files (onnxruntime reads them there).
    proto = model if isinstance(model, onnx.ModelProto) else load_model(model, external_data=False)
    metadata = read_gradient_metadata(proto)
    session = ForwardSession(model, device=device)
    graph_inputs = {value.name: value for value in proto.graph.input}
    rows = metadata.batch_size or 1
    feed: dict[str, np.ndarray] = {}
    for name in session.input_names:
        fill = 1.0 if name == metadata.cotangent else 0.0
        shape = (rows, *_one_sample_shape(graph_inputs[name])[1:])
        feed[name] = np.full(shape, fill, dtype=_numpy_dtype(graph_inputs[name]))
    wanted = [metadata.explained, *metadata.gradients.values()]
    results = session.run(feed, wanted)
    finite = all(bool(np.isfinite(results[name]).all()) for name in wanted)
    batched = [*metadata.inputs, metadata.cotangent]
    memory = estimate_bytes_per_sample(proto, batched, fixed_batch=metadata.batch_size)
    return SessionCheck(session.provider, tuple(available_providers()), memory, finite)


def _human_bytes(count: int) -> str:
    for unit, size in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if count >= size:
            return f"{count / size:.1f} {unit}"
    return f"{count} B"


def _one_sample_shape(value: onnx.ValueInfoProto) -> tuple[int, ...]:
    dims = list(value.type.tensor_type.shape.dim)
    rest = dims[1:]
    if not dims or not all(d.HasField("dim_value") for d in rest):
        shown = [d.dim_value if d.HasField("dim_value") else (d.dim_param or "?") for d in dims]
        raise InvalidModelError(
            f"input {value.name!r} has shape {shown}: every dimension after the batch must be static; "
            "pin it with --shape NAME=DIMS"
        )
    return (1, *(int(d.dim_value) for d in rest))


def _numpy_dtype(value: onnx.ValueInfoProto) -> np.dtype:
    return np.dtype(onnx.helper.tensor_dtype_to_np_dtype(value.type.tensor_type.elem_type))
