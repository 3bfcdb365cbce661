"""Normalising a model before differentiation: opset upgrade, inlining, constants, input shapes.

Steps, on a private copy of the model:

1. inline model-local functions (dynamo exports may carry some);
2. upgrade default-domain opsets below :data:`TARGET_OPSET` with ``onnx.version_converter``
   (if the converter fails, the original opset is kept and the rules handle its semantics);
3. turn ``Constant`` nodes into initializers, so weights stored as Constant nodes (Paddle,
   some TensorFlow exports) are exposed and treated like any initializer;
4. fold integer/boolean computations on constants (``Mod``, ``Cast``, ``Reshape`` of shape
   constants in legacy PyTorch exports) into initializers, so shape inference sees their values;
   Constant nodes of If branches become initializers too, and an If with a constant condition
   is replaced by its taken branch (:mod:`.branches`);
5. resolve and validate the differentiated inputs, the explained tensor and the pinned shapes.

Imports onnx and numpy only.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import helper, numpy_helper
from onnx.reference import ReferenceEvaluator

from models.gradient_graph.advice import integer_input_advice, no_default_domain_advice
from models.gradient_graph.branches import fold_constant_ifs, hoist_branch_constants
from models.gradient_graph.errors import InvalidModelError
from models.gradient_graph.external_data import check_model, inline_small_tensors, uses_external_data
from models.gradient_graph.names import BATCH_DIM
from models.gradient_graph.shapes import FLOAT_TYPES, Dim

__all__ = ["MIN_OPSET", "TARGET_OPSET", "PreparedModel", "default_opset", "prepare_model"]

#: Models below this default-domain opset are upgraded to it before differentiation.
TARGET_OPSET = 17
#: The oldest opset the rules understand when an upgrade fails.
MIN_OPSET = 11


@dataclass
class PreparedModel:
    """A normalised private copy of the model and the resolved arguments.

    Attributes:
        model: the copy (opset upgraded, functions inlined, Constant nodes as initializers).
        opset: its default-domain opset.
        original_opset: the opset of the model as given.
        original_opsets: the opset of every domain the model as given imports (``""``: default domain).
        inputs: the differentiated graph inputs.
        explained: the explained tensor.
        batch_inputs: graph inputs whose leading dimension is the batch.
        pinned: full shapes (leading dimension :data:`BATCH_DIM`) of the inputs given ``input_shapes``.
        declared: the shape each graph input declares in the model as given (``None`` if none).
        external_data_dir: the folder external-data tensors of ``model`` are read from (``None``: none).
    """

    model: onnx.ModelProto
    opset: int
    original_opset: int
    inputs: list[str]
    explained: str
    batch_inputs: list[str]
    pinned: dict[str, list[Dim]] = field(default_factory=dict)
    declared: dict[str, list[Dim] | None] = field(default_factory=dict)
    original_opsets: dict[str, int] = field(default_factory=dict)
    external_data_dir: Path | None = None


def default_opset(model: onnx.ModelProto) -> int | None:
    """The model's default-domain (``ai.onnx``) opset version, or ``None`` if it imports none."""
    for entry in model.opset_import:
        if entry.domain in ("", "ai.onnx"):
            return int(entry.version)
    return None


def _type_name(elem_type: int) -> str:
    return onnx.TensorProto.DataType.Name(elem_type) if elem_type else "unknown"


def _upgrade(model: onnx.ModelProto, opset: int) -> onnx.ModelProto:
    if opset >= TARGET_OPSET:
        return model
    try:
        upgraded = onnx.version_converter.convert_version(model, TARGET_OPSET)
        check_model(upgraded)
        # Some adapters emit mistyped constants (Clip-6 on doubles): type-check the result.
        onnx.shape_inference.infer_shapes(upgraded, check_type=True, strict_mode=True)
        return upgraded
    except Exception as err:  # noqa: BLE001 - the converter raises many kinds; the fallback is explicit
        if opset < MIN_OPSET:
            raise InvalidModelError(
                f"the model uses opset {opset}; the gradient builder needs opset >= {MIN_OPSET} and "
                f"the automatic upgrade to {TARGET_OPSET} failed ({err}). Re-export the model with a newer opset"
            ) from err
        return model


def _constants_to_initializers(graph: onnx.GraphProto) -> None:
    kept: list[onnx.NodeProto] = []
    for node in graph.node:
        if node.op_type == "Constant" and node.domain in ("", "ai.onnx") and len(node.attribute) == 1:
            tensor = _constant_tensor(node)
            if tensor is not None:
                tensor.name = node.output[0]
                graph.initializer.append(tensor)
                continue
        kept.append(node)
    if len(kept) != len(graph.node):
        del graph.node[:]
        graph.node.extend(kept)


def _constant_tensor(node: onnx.NodeProto) -> onnx.TensorProto | None:
    attr = node.attribute[0]
    value = helper.get_attribute_value(attr)
    if attr.name == "value" and isinstance(value, onnx.TensorProto):
        tensor = onnx.TensorProto()
        tensor.CopyFrom(value)
        return tensor
    arrays: dict[str, Callable[[Any], np.ndarray]] = {
        "value_float": lambda v: np.asarray(v, dtype=np.float32),
        "value_floats": lambda v: np.asarray(list(v), dtype=np.float32),
        "value_int": lambda v: np.asarray(v, dtype=np.int64),
        "value_ints": lambda v: np.asarray(list(v), dtype=np.int64),
    }
    make = arrays.get(attr.name)
    return None if make is None else numpy_helper.from_array(np.asarray(make(value)))


# Values at most this large are folded: shape arithmetic, never weights.
_FOLD_ELEMENTS = 4096
_NEVER_FOLD = frozenset(
    {"RandomNormal", "RandomUniform", "RandomNormalLike", "RandomUniformLike", "Multinomial", "Bernoulli"}
)


def _fold_constants(model: onnx.ModelProto) -> None:
    """Replace nodes computing small non-float tensors from constants by initializers."""
    graph = model.graph
    known: dict[str, np.ndarray] = {}
    for t in graph.initializer:
        small = t.data_type not in FLOAT_TYPES or _numel(t.dims) <= 16
        if small and _numel(t.dims) <= _FOLD_ELEMENTS and not uses_external_data(t):
            known[t.name] = numpy_helper.to_array(t)
    graph_inputs = {v.name for v in graph.input}
    known = {k: v for k, v in known.items() if k not in graph_inputs}
    kept: list[onnx.NodeProto] = []
    folded: list[onnx.TensorProto] = []
    for node in graph.node:
        inputs = [name for name in node.input if name]
        foldable = (
            node.domain in ("", "ai.onnx")
            and node.op_type not in _NEVER_FOLD
            and inputs
            and all(name in known for name in inputs)
            and not any(
                a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS) for a in node.attribute
            )
        )
        values = _evaluate(model, node, known) if foldable else None
        if values is None or any(
            v.dtype.kind == "f" or v.size > _FOLD_ELEMENTS or v.dtype == object for v in values
        ):
            kept.append(node)
            continue
        for name, value in zip(node.output, values, strict=False):
            if name:
                known[name] = value
                folded.append(numpy_helper.from_array(value, name))
    if folded:
        del graph.node[:]
        graph.node.extend(kept)
        graph.initializer.extend(folded)


def _evaluate(
    model: onnx.ModelProto, node: onnx.NodeProto, known: Mapping[str, np.ndarray]
) -> list[np.ndarray] | None:
    feeds = {name: known[name] for name in node.input if name}
    inputs = [
        helper.make_tensor_value_info(n, helper.np_dtype_to_tensor_dtype(v.dtype), list(v.shape))
        for n, v in feeds.items()
    ]
    outputs = [helper.make_tensor_value_info(n, onnx.TensorProto.UNDEFINED, None) for n in node.output if n]
    graph = helper.make_graph([node], "fold", inputs, outputs)
    tiny = helper.make_model(graph, opset_imports=list(model.opset_import))
    try:
        results = ReferenceEvaluator(tiny).run(None, feeds)
    except Exception:  # noqa: BLE001 - folding is an optimisation; the node stays when it fails
        return None
    return [np.asarray(r) for r in results]


def _numel(dims: Sequence[int]) -> int:
    n = 1
    for d in dims:
        n *= int(d)
    return n


def _tensor_type(value: onnx.ValueInfoProto) -> int:
    return value.type.tensor_type.elem_type if value.type.HasField("tensor_type") else 0


def _static_dims(value: onnx.ValueInfoProto) -> list[Dim] | None:
    if not value.type.HasField("tensor_type") or not value.type.tensor_type.HasField("shape"):
        return None
    dims: list[Dim] = []
    for d in value.type.tensor_type.shape.dim:
        dims.append(int(d.dim_value) if d.HasField("dim_value") else (d.dim_param or None))
    return dims


_INTEGER_TYPES = frozenset(
    {
        onnx.TensorProto.INT8,
        onnx.TensorProto.INT16,
        onnx.TensorProto.INT32,
        onnx.TensorProto.INT64,
        onnx.TensorProto.UINT8,
        onnx.TensorProto.UINT16,
        onnx.TensorProto.UINT32,
        onnx.TensorProto.UINT64,
    }
)


def _resolve_inputs(model: onnx.ModelProto, inputs: Sequence[str] | None, explained: str | None) -> list[str]:
    graph = model.graph
    initializers = {t.name for t in graph.initializer}
    graph_inputs = {v.name: v for v in graph.input if v.name not in initializers}
    if inputs is None:
        chosen = [name for name, v in graph_inputs.items() if _tensor_type(v) in FLOAT_TYPES]
        if not chosen:
            integers = [n for n, v in graph_inputs.items() if _tensor_type(v) in _INTEGER_TYPES]
            if integers:
                first = integers[0]
                kind = _type_name(_tensor_type(graph_inputs[first]))
                raise InvalidModelError(
                    "inputs: the model has no float graph input to differentiate; "
                    + integer_input_advice(model, first, kind, explained)
                )
            kinds = (
                ", ".join(f"{n} ({_type_name(_tensor_type(v))})" for n, v in graph_inputs.items()) or "none"
            )
            raise InvalidModelError(
                f"inputs: the model has no float graph input to differentiate; its inputs: {kinds}"
            )
        return chosen
    if isinstance(inputs, str) or not isinstance(inputs, Sequence):
        raise InvalidModelError(f"inputs must be a sequence of input names, got {type(inputs).__name__}")
    if not inputs:
        raise InvalidModelError("inputs must name at least one graph input, got an empty sequence")
    chosen = []
    for name in inputs:
        if name in initializers:
            raise InvalidModelError(
                f"inputs: {name!r} is an initializer (a weight); only graph inputs can be differentiated"
            )
        if name not in graph_inputs:
            raise InvalidModelError(
                f"inputs: {name!r} is not a graph input; the graph inputs are {sorted(graph_inputs)}"
            )
        elem = _tensor_type(graph_inputs[name])
        if elem in _INTEGER_TYPES:
            raise InvalidModelError(
                "inputs: " + integer_input_advice(model, name, _type_name(elem), explained)
            )
        if elem not in FLOAT_TYPES:
            raise InvalidModelError(
                f"inputs: {name!r} has element type {_type_name(elem)}, expected a float type "
                "(FLOAT, DOUBLE, FLOAT16 or BFLOAT16)"
            )
        if name in chosen:
            raise InvalidModelError(f"inputs: {name!r} is listed twice")
        chosen.append(name)
    return chosen


def _tensor_names(graph: onnx.GraphProto) -> dict[str, str]:
    """Every tensor name of the graph -> where it comes from."""
    names = {v.name: "graph input" for v in graph.input}
    names.update({t.name: "initializer" for t in graph.initializer})
    for node in graph.node:
        for out in node.output:
            if out:
                names[out] = "node output"
    return names


def _resolve_explained(graph: onnx.GraphProto, explained: str | None) -> str:
    if explained is None:
        for out in graph.output:
            if _tensor_type(out) in FLOAT_TYPES:
                name: str = out.name
                return name
        kinds = ", ".join(f"{o.name} ({_type_name(_tensor_type(o))})" for o in graph.output) or "none"
        raise InvalidModelError(
            f"explained: the model has no float graph output to explain; its outputs: {kinds}"
        )
    if not isinstance(explained, str) or not explained:
        raise InvalidModelError(f"explained must be a tensor name, got {explained!r}")
    names = _tensor_names(graph)
    if explained not in names:
        outputs = [o.name for o in graph.output]
        raise InvalidModelError(
            f"explained: no tensor named {explained!r} in the graph (graph outputs: {outputs}; "
            "any intermediate tensor name is accepted too)"
        )
    if names[explained] == "initializer":
        raise InvalidModelError(
            f"explained: {explained!r} is an initializer (a constant); explain a computed tensor"
        )
    return explained


def _resolve_pins(
    graph: onnx.GraphProto, input_shapes: Mapping[str, Sequence[int]] | None, batch_inputs: Sequence[str]
) -> dict[str, list[Dim]]:
    if input_shapes is None:
        return {}
    if not isinstance(input_shapes, Mapping):
        raise InvalidModelError(
            f"input_shapes must map input names to shapes, got {type(input_shapes).__name__}"
        )
    values = {v.name: v for v in graph.input}
    pinned: dict[str, list[Dim]] = {}
    for name, dims in input_shapes.items():
        if name not in values:
            raise InvalidModelError(
                f"input_shapes: {name!r} is not a graph input; the inputs are {sorted(values)}"
            )
        if isinstance(dims, str) or not isinstance(dims, Sequence):
            raise InvalidModelError(f"input_shapes[{name!r}] must be a sequence of ints, got {dims!r}")
        clean: list[int] = []
        for d in dims:
            if isinstance(d, bool) or not isinstance(d, int) or d <= 0:
                raise InvalidModelError(
                    f"input_shapes[{name!r}] must hold positive ints (one sample, no batch dimension), "
                    f"got {list(dims)!r}"
                )
            clean.append(int(d))
        declared = _static_dims(values[name])
        if declared is not None:
            if len(declared) != len(clean) + 1:
                raise InvalidModelError(
                    f"input_shapes[{name!r}] has {len(clean)} dims; the input has rank {len(declared)}, so expected "
                    f"{len(declared) - 1} dims per sample (the batch dimension excluded), got {clean}"
                )
            for axis, (want, have) in enumerate(zip(declared[1:], clean, strict=False), start=1):
                if isinstance(want, int) and want != have:
                    raise InvalidModelError(
                        f"input_shapes[{name!r}] dim {axis} is {have}, but the model fixes it to {want}"
                    )
        lead: Dim = (
            BATCH_DIM if (name in batch_inputs or declared is None) else (declared[0] if declared else None)
        )
        pinned[name] = [lead, *clean]
    return pinned


def _batch_inputs(graph: onnx.GraphProto, differentiated: Sequence[str]) -> list[str]:
    initializers = {t.name for t in graph.initializer}
    batch = list(differentiated)
    for value in graph.input:
        if value.name in initializers or value.name in batch:
            continue
        dims = _static_dims(value)
        if dims and not isinstance(dims[0], int):
            batch.append(value.name)
    return batch


def prepare_model(
    model: onnx.ModelProto,
    inputs: Sequence[str] | None,
    explained: str | None,
    input_shapes: Mapping[str, Sequence[int]] | None,
    external_data_dir: str | os.PathLike[str] | None = None,
) -> PreparedModel:
    """Copy and normalise ``model`` and resolve the builder's arguments (see the module docstring).

    ``external_data_dir`` is the folder of the model's external data files, when its tensors
    reference files (the copy keeps the references; values are read from there on demand).

    Raises:
        InvalidModelError: wrong argument types, unknown or non-float inputs, unknown explained
            tensor, malformed pinned shapes, or a model without a default-domain opset.
    """
    if not isinstance(model, onnx.ModelProto):
        raise InvalidModelError(
            f"model must be an onnx.ModelProto (use load_model for files and bytes), got {type(model).__name__}"
        )
    original = default_opset(model)
    if original is None:
        raise InvalidModelError(no_default_domain_advice(model))
    original_opsets = {
        ("" if e.domain == "ai.onnx" else e.domain): int(e.version) for e in model.opset_import
    }
    work = onnx.ModelProto()
    work.CopyFrom(model)
    if external_data_dir is not None:
        inline_small_tensors(work, external_data_dir)
    if work.functions:
        from onnx import inliner  # not re-exported by the onnx package

        work = inliner.inline_local_functions(work)
    work = _upgrade(work, original)
    _constants_to_initializers(work.graph)
    hoist_branch_constants(work.graph, _constant_tensor)
    _fold_constants(work)
    while fold_constant_ifs(work.graph):  # an inlined branch may hold Ifs and constants of its own
        _constants_to_initializers(work.graph)
        hoist_branch_constants(work.graph, _constant_tensor)
        _fold_constants(work)
    del work.graph.value_info[:]
    graph = work.graph
    chosen = _resolve_inputs(work, inputs, explained if isinstance(explained, str) else None)
    target = _resolve_explained(graph, explained)
    batch = _batch_inputs(graph, chosen)
    pinned = _resolve_pins(graph, input_shapes, batch)
    return PreparedModel(
        model=work,
        opset=default_opset(work) or original,
        original_opset=original,
        inputs=chosen,
        explained=target,
        batch_inputs=batch,
        pinned=pinned,
        declared={v.name: _static_dims(v) for v in graph.input},
        original_opsets=original_opsets,
        external_data_dir=None if external_data_dir is None else Path(external_data_dir),
    )
