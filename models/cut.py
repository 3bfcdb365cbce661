"""Splitting an ONNX model at an intermediate tensor (layer attribution, embeddings of text models).

Explaining with respect to a tensor ``T`` inside the graph (an embedding output, a convolutional
feature map) splits the model in two:

* the **prefix**: the nodes that compute ``T`` from the graph inputs; it runs once per instance,
  on the clean input;
* the **suffix**: the nodes that compute the explained tensor with ``T`` as a graph input. Every
  other graph input the suffix still reads (an attention mask, the token ids themselves when
  positions come from ``Shape(input_ids)``) stays a graph input, fed unchanged to every noisy
  sample: noise at ``T`` never changes shapes or masks. A float tensor the suffix recomputes from
  the inputs without passing through ``T`` stays clean, as with a forward hook replacing ``T``
  (Captum's layer attributions).

The gradient graph of the suffix with respect to ``T`` is then built by the ordinary builder.
Imports onnx and numpy only.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import helper

from models.gradient_graph import InvalidModelError
from models.gradient_graph.external_data import map_tensor
from models.runtime.graph import subgraph_inputs

__all__ = [
    "FLOAT_ELEMENT_TYPES",
    "CutModel",
    "candidate_listing",
    "candidate_tensors",
    "cut_model",
    "element_types",
    "embedding_bounds",
    "embedding_table",
    "inferred_instance_shape",
]

FLOAT_ELEMENT_TYPES = frozenset({onnx.TensorProto.FLOAT, onnx.TensorProto.DOUBLE, onnx.TensorProto.FLOAT16})
_CANDIDATES_SHOWN = 6


@dataclass(frozen=True)
class CutModel:
    """A model split at ``tensor``.

    Attributes:
        tensor: the intermediate tensor the model is cut at.
        prefix: computes ``tensor`` (its only output) from the graph inputs in ``prefix_inputs``.
        suffix: computes ``explained`` (its only output) from ``tensor`` (its first graph input)
            and the original graph inputs in ``suffix_inputs``.
        prefix_inputs: the original graph inputs the prefix reads.
        suffix_inputs: the original graph inputs the suffix reads (besides ``tensor``).
    """

    tensor: str
    explained: str
    prefix: onnx.ModelProto
    suffix: onnx.ModelProto
    prefix_inputs: tuple[str, ...]
    suffix_inputs: tuple[str, ...]


def _reads(node: onnx.NodeProto) -> set[str]:
    return {name for name in node.input if name} | subgraph_inputs(node)


def _ancestors(graph: onnx.GraphProto, targets: Sequence[str], stop: str | None) -> tuple[set[int], set[str]]:
    """Indices of the nodes ``targets`` need (not walking past ``stop``) and every tensor they read."""
    producers = {name: index for index, node in enumerate(graph.node) for name in node.output if name}
    kept: set[int] = set()
    seen: set[str] = set()
    stack = list(targets)
    while stack:
        name = stack.pop()
        if name in seen:
            continue
        seen.add(name)
        if name == stop:
            continue
        index = producers.get(name)
        if index is not None and index not in kept:
            kept.add(index)
            stack.extend(_reads(graph.node[index]))
    return kept, seen


def _float_descendants(graph: onnx.GraphProto, tensor: str, types: Mapping[str, int]) -> set[str]:
    """Float tensors computed from ``tensor`` through float tensors (a ``Shape`` of it does not count:
    its value cannot change under noise)."""
    reached = {tensor}
    for node in graph.node:
        if _reads(node) & reached:
            # An untyped tensor (shape inference gave up) counts as float: refusing needs certainty.
            reached.update(
                name
                for name in node.output
                if name and types.get(name, onnx.TensorProto.FLOAT) in FLOAT_ELEMENT_TYPES
            )
    return reached


def element_types(model: onnx.ModelProto) -> dict[str, int]:
    """Element type of every tensor of the graph that ONNX shape inference can type (weights not read)."""
    source = model.graph
    skeleton = onnx.ModelProto(ir_version=model.ir_version)
    skeleton.opset_import.extend(model.opset_import)
    skeleton.functions.extend(model.functions)
    skeleton.graph.node.extend(source.node)
    skeleton.graph.input.extend(source.input)
    skeleton.graph.output.extend(source.output)
    skeleton.graph.value_info.extend(source.value_info)
    declared = {value.name for value in source.input}
    for init in source.initializer:
        if init.name not in declared:
            skeleton.graph.input.append(
                helper.make_tensor_value_info(init.name, init.data_type, list(init.dims))
            )
    try:
        inferred = onnx.shape_inference.infer_shapes(skeleton)
    except Exception:  # noqa: BLE001 - a model shape inference rejects still has its declared types
        inferred = skeleton
    types = {init.name: int(init.data_type) for init in source.initializer}
    for value in [*inferred.graph.input, *inferred.graph.value_info, *inferred.graph.output]:
        if value.type.HasField("tensor_type") and value.type.tensor_type.elem_type:
            types[value.name] = int(value.type.tensor_type.elem_type)
    return types


def candidate_tensors(
    model: onnx.ModelProto, explained: str, types: Mapping[str, int] | None = None
) -> list[str]:
    """Float node outputs the explained tensor depends on, embedding lookups (``Gather`` of a weight)
    first, then in graph order; at most a few, for error messages."""
    graph = model.graph
    types = element_types(model) if types is None else types
    kept, _ = _ancestors(graph, [explained], None)
    weights = {init.name for init in graph.initializer}
    lookups: list[str] = []
    others: list[str] = []
    for index, node in enumerate(graph.node):
        if index not in kept:
            continue
        for name in node.output:
            if not name or name == explained or types.get(name) not in FLOAT_ELEMENT_TYPES:
                continue
            is_lookup = node.op_type == "Gather" and bool(node.input) and node.input[0] in weights
            (lookups if is_lookup else others).append(name)
    return (lookups + others)[:_CANDIDATES_SHOWN]


def candidate_listing(model: onnx.ModelProto, explained: str, types: Mapping[str, int] | None = None) -> str:
    """The sentence refusals end with: the float tensors ``explained`` depends on (a sample)."""
    shown = candidate_tensors(model, explained, types)
    listing = ", ".join(repr(name) for name in shown) if shown else "none found"
    return f"float tensors the explained tensor depends on include: {listing}"


def _refuse(
    model: onnx.ModelProto, explained: str, reason: str, types: Mapping[str, int]
) -> InvalidModelError:
    return InvalidModelError(f"{reason}; {candidate_listing(model, explained, types)}")


def cut_model(
    model: onnx.ModelProto,
    tensor: str,
    explained: str,
    instance_shape: Sequence[int] | None = None,
) -> CutModel:
    """Split ``model`` at ``tensor`` (see the module docstring).

    Args:
        model: the forward model (external data may stay in files: the weights are not read).
        tensor: a float tensor computed inside the graph (a node output, not a graph input).
        explained: the tensor to explain, downstream of ``tensor``.
        instance_shape: the shape of one instance of ``tensor`` (no batch dimension), declared
            on the suffix's new input; ``None`` leaves the dimensions after the batch unknown.

    Raises:
        InvalidModelError: ``tensor`` does not exist, is a graph input or a weight, is not a float
            tensor, or is not upstream of ``explained``; the message lists candidate tensors.
    """
    graph = model.graph
    types = element_types(model)
    produced = {name for node in graph.node for name in node.output if name}
    weights = {init.name for init in graph.initializer}
    inputs = [value for value in graph.input if value.name not in weights]
    if explained not in produced and explained not in {v.name for v in inputs}:
        raise InvalidModelError(f"the explained tensor {explained!r} is not a tensor of the graph")
    if tensor in weights:
        raise _refuse(
            model,
            explained,
            f"explained_input {tensor!r} is a weight (an initializer), not a computed tensor",
            types,
        )
    if tensor not in produced:
        raise _refuse(model, explained, f"explained_input {tensor!r} is not a tensor of the graph", types)
    elem = types.get(tensor, onnx.TensorProto.UNDEFINED)
    if elem not in FLOAT_ELEMENT_TYPES:
        kind = onnx.TensorProto.DataType.Name(elem) if elem else "of an unknown type"
        raise _refuse(
            model,
            explained,
            f"explained_input {tensor!r} is {kind}, not a float tensor: noise and "
            "gradients need a float tensor (explain the embedding output, not the token ids)",
            types,
        )
    suffix_nodes, suffix_reads = _ancestors(graph, [explained], tensor)
    if tensor == explained or explained not in _float_descendants(graph, tensor, types):
        raise _refuse(
            model,
            explained,
            f"explained_input {tensor!r} is not upstream of the explained tensor "
            f"{explained!r} through float tensors, so its gradient is identically zero",
            types,
        )
    prefix_nodes, prefix_reads = _ancestors(graph, [tensor], None)
    input_names = [value.name for value in inputs]
    prefix_inputs = tuple(name for name in input_names if name in prefix_reads)
    suffix_inputs = tuple(name for name in input_names if name in suffix_reads)
    batch = _batch_dim([value for value in inputs if value.name in prefix_inputs])
    dims: list[int | str | None] = [batch, *(instance_shape or [])]
    cut_value = helper.make_tensor_value_info(tensor, elem, dims if instance_shape is not None else None)
    prefix = _submodel(model, prefix_nodes, prefix_inputs, prefix_reads, [tensor], types)
    suffix = _submodel(
        model, suffix_nodes, suffix_inputs, suffix_reads, [explained], types, first_input=cut_value
    )
    return CutModel(tensor, explained, prefix, suffix, prefix_inputs, suffix_inputs)


def _batch_dim(inputs: Sequence[onnx.ValueInfoProto]) -> int | str:
    """The batch dimension of the cut tensor: the fixed batch of an export without a dynamic batch
    axis (every input the prefix reads declares the same size on axis 0), else symbolic. A fixed
    export's suffix then stays a fixed-batch graph, run one batch of that size per call."""
    sizes: set[int | None] = set()
    for value in inputs:
        dims = value.type.tensor_type.shape.dim
        sizes.add(int(dims[0].dim_value) if dims and dims[0].HasField("dim_value") else None)
    fixed = sizes.pop() if len(sizes) == 1 else None
    return fixed if fixed is not None else "batch"


def _submodel(
    model: onnx.ModelProto,
    nodes: set[int],
    inputs: Sequence[str],
    reads: set[str],
    outputs: Sequence[str],
    types: Mapping[str, int],
    first_input: onnx.ValueInfoProto | None = None,
) -> onnx.ModelProto:
    graph = model.graph
    result = onnx.ModelProto()
    result.ir_version = model.ir_version
    result.opset_import.extend(model.opset_import)
    result.functions.extend(model.functions)
    result.producer_name = model.producer_name
    sub = result.graph
    sub.name = graph.name
    sub.node.extend(node for index, node in enumerate(graph.node) if index in nodes)
    if first_input is not None:
        sub.input.append(first_input)
    by_name = {value.name: value for value in graph.input}
    sub.input.extend(by_name[name] for name in inputs)
    sub.initializer.extend(init for init in graph.initializer if init.name in reads)
    infos = {value.name: value for value in [*graph.value_info, *graph.output]}
    for name in outputs:
        if name in infos:
            sub.output.append(infos[name])
        else:
            sub.output.append(
                helper.make_tensor_value_info(name, types.get(name, onnx.TensorProto.FLOAT), None)
            )
    skip = {value.name for value in [*sub.input, *sub.output]}
    sub.value_info.extend(
        value for value in graph.value_info if value.name in reads and value.name not in skip
    )
    return result


def embedding_table(model: onnx.ModelProto, tensor: str) -> onnx.TensorProto | None:
    """The weight ``tensor`` is looked up from (``Gather(weight, ids)`` on axis 0), else ``None``."""
    graph = model.graph
    weights: dict[str, onnx.TensorProto] = {init.name: init for init in graph.initializer}
    for node in graph.node:
        if tensor in node.output and node.op_type == "Gather" and node.domain in ("", "ai.onnx"):
            axis = next((int(helper.get_attribute_value(a)) for a in node.attribute if a.name == "axis"), 0)
            table = weights.get(node.input[0])
            if (
                axis == 0
                and table is not None
                and len(table.dims) == 2
                and table.data_type in FLOAT_ELEMENT_TYPES
            ):
                return table
    return None


def embedding_bounds(
    table: onnx.TensorProto, instance_shape: Sequence[int], folder: Path | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Per-dimension bounds of an embedding output: the min and max over the table's rows.

    Args:
        table: the ``(vocabulary, dim)`` embedding weight.
        instance_shape: one instance of the looked-up tensor, e.g. ``(tokens, dim)``.
        folder: the folder of the model's external data files, when the table lives in one.

    Returns:
        ``(lower, upper)`` float32, broadcast to ``instance_shape``; a dimension where every row
        holds the same value gets a bound span of at least 1e-6 so that lower < upper holds.
    """
    values = np.asarray(map_tensor(table, folder), dtype=np.float32)
    lower, upper = values.min(axis=0), values.max(axis=0)
    flat = upper <= lower
    upper = np.where(flat, lower + np.maximum(np.abs(lower) * 1e-6, 1e-6), upper).astype(np.float32)
    shape = tuple(int(d) for d in instance_shape)
    return np.broadcast_to(lower, shape).copy(), np.broadcast_to(upper, shape).copy()


def inferred_instance_shape(
    model: onnx.ModelProto, tensor: str, pins: Mapping[str, Sequence[int]] | None = None
) -> tuple[int, ...] | None:
    """One instance's shape of ``tensor`` (no batch dimension) by ONNX shape inference, the graph
    inputs in ``pins`` given those instance shapes; ``None`` when a dimension after the batch stays
    unknown. Weights are not read."""
    skeleton = onnx.ModelProto(ir_version=model.ir_version)
    skeleton.opset_import.extend(model.opset_import)
    skeleton.functions.extend(model.functions)
    graph = skeleton.graph
    graph.node.extend(model.graph.node)
    weights = {init.name for init in model.graph.initializer}
    for value in model.graph.input:
        if value.name in weights:
            continue
        if pins and value.name in pins:
            pinned: list[str | int | None] = ["batch", *(int(d) for d in pins[value.name])]
            value = helper.make_tensor_value_info(value.name, value.type.tensor_type.elem_type, pinned)
        graph.input.append(value)
    for init in model.graph.initializer:
        graph.input.append(helper.make_tensor_value_info(init.name, init.data_type, list(init.dims)))
    graph.output.append(helper.make_tensor_value_info(tensor, onnx.TensorProto.UNDEFINED, None))
    try:
        inferred = onnx.shape_inference.infer_shapes(skeleton)
    except Exception:  # noqa: BLE001 - a model shape inference rejects: the caller asks for the shape
        return None
    for value in [*inferred.graph.value_info, *inferred.graph.output]:
        if value.name == tensor and value.type.tensor_type.HasField("shape"):
            dims = value.type.tensor_type.shape.dim[1:]
            if all(d.HasField("dim_value") for d in dims) and value.type.tensor_type.shape.dim:
                return tuple(int(d.dim_value) for d in dims)
    return None
