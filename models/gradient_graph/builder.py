"""Reverse-mode differentiation of an ONNX graph into a gradient model.

The forward graph is kept as it is; the builder walks the nodes on a float path from a
differentiated input to the explained tensor in reverse topological order, asks each node's
rule (:mod:`models.gradient_graph.rules`) for its input gradients, sums the contributions of
tensors used more than once, and appends the emitted nodes. Before the walk, the registered graph
passes (:mod:`models.gradient_graph.passes`) may replace the rule of some nodes. Weights are never
differentiated.
Imports onnx and numpy only (never onnxruntime).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

import onnx
from onnx import helper

from models.gradient_graph.advice import ML_DOMAIN, ml_ops_hint
from models.gradient_graph.batching import decide_batch
from models.gradient_graph.context import PIN_HINT, SubgraphDifferentiator, VjpContext
from models.gradient_graph.errors import (
    GradientGraphError,
    InvalidModelError,
    describe_node,
    unsupported_op,
)
from models.gradient_graph.external_data import check_model
from models.gradient_graph.metadata import GradientMetadata, write_gradient_metadata
from models.gradient_graph.names import BATCH_DIM, cotangent_name, gradient_name
from models.gradient_graph.passes import ActiveGraph, rule_overrides
from models.gradient_graph.prepare import PreparedModel, prepare_model
from models.gradient_graph.rules import VjpRule, get_rule
from models.gradient_graph.shapes import (
    BATCH_PROBE,
    FLOAT_TYPES,
    Dim,
    ShapeTable,
    infer_shape_table,
    infer_subgraph_shapes,
)
from models.gradient_graph.subgraphs import differentiable_reads, node_subgraphs, outer_reads
from models.gradient_graph.weights import LazyConstants, exposed_weights

__all__ = ["OUTPUT_IR_VERSION", "build_gradient_model"]

#: IR version of the models the builder writes (onnxruntime 1.31 reads at most 13 from onnx 1.23's 14).
OUTPUT_IR_VERSION = 10


def _node_reads(node: onnx.NodeProto) -> list[str]:
    return [name for name in differentiable_reads(node) if name]


def _forward_dependent(graph: onnx.GraphProto, sources: Sequence[str], shapes: ShapeTable) -> set[str]:
    reached = set(sources)
    for node in graph.node:
        if any(name in reached for name in _node_reads(node)):
            reached.update(out for out in node.output if out and shapes.is_float(out))
    return reached


def _backward_reachable(graph: onnx.GraphProto, targets: Sequence[str]) -> set[str]:
    reached = set(targets)
    for node in reversed(graph.node):
        if any(out in reached for out in node.output if out):
            reached.update(_node_reads(node))
    return reached


_RULE_HINT = (
    "Re-export the model without it (e.g. another opset or exporter), choose another explained tensor, "
    "or ask for the op to be added (models.gradient_graph.supported_ops() lists the supported ones)"
)
_CONTROL_FLOW_HINT = (
    "Control flow in Loop and Scan bodies is not differentiated (If is): export the model with the loop "
    "unrolled (e.g. trace it with a fixed sequence length or trip count, or write recurrences with "
    "torch.nn.LSTM/GRU/RNN, which export as LSTM/GRU/RNN ops), or explain a tensor computed before the node"
)


def _check_rules(
    active: Sequence[tuple[int, onnx.NodeProto]],
    forward: set[str],
    file_opsets: Mapping[str, int],
    opsets: Mapping[str, int],
    where: str = "",
) -> None:
    """Raise the UnsupportedOpError of the first active node without a rule (``where``: the
    subgraph it is in, e.g. ``" (in then_branch of If node 'x')"``)."""
    missing = [(i, n) for i, n in active if get_rule(n.op_type, n.domain) is None]
    if not missing:
        return
    index, node = missing[0]
    others = sorted({n.op_type for _, n in missing[1:]} - {node.op_type})
    also = f" (also without a rule on the path: {', '.join(others)})" if others else ""
    subgraph_reads = sorted(outer_reads(node) & forward)
    if subgraph_reads:
        shown = ", ".join(repr(name) for name in subgraph_reads[:4])
        reason = (
            f"its subgraphs read {shown}, computed from the differentiated inputs, and control flow "
            f"has no gradient rule{also}"
        )
        hint = _CONTROL_FLOW_HINT
    elif node_subgraphs(node):
        reason = (
            "control flow has no gradient rule, and it lies on the path from the differentiated inputs to the "
            f"explained tensor{also}"
        )
        hint = _CONTROL_FLOW_HINT
    else:
        reason = (
            "no gradient rule for this op, and it lies on the path from the differentiated inputs to the "
            f"explained tensor{also}"
        )
        ml_ops = [n.op_type for _, n in missing if n.domain == ML_DOMAIN]
        hint = ml_ops_hint(ml_ops) if node.domain == ML_DOMAIN else _RULE_HINT
    raise unsupported_op(node, describe_node(node, index), file_opsets, opsets, reason + where, hint)


def _onnx_dims(dims: Sequence[Dim]) -> list[int | str | None]:
    out: list[int | str | None] = []
    for d in dims:
        if isinstance(d, int):
            out.append(d)
        elif d in (BATCH_PROBE, BATCH_DIM):
            out.append(BATCH_DIM)
        elif isinstance(d, str) and d.startswith("sym:"):
            out.append(d[4:])
        else:
            out.append(None)
    return out


def _value_info(name: str, elem_type: int, dims: Sequence[Dim]) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, elem_type, _onnx_dims(dims))


class _Accumulator:
    """Gradient contributions per tensor, summed on first read."""

    def __init__(self, ctx: VjpContext) -> None:
        self._ctx = ctx
        self._parts: dict[str, list[str]] = {}

    def add(self, name: str, grad: str) -> None:
        self._parts.setdefault(name, []).append(grad)

    def has(self, name: str) -> bool:
        return name in self._parts

    def total(self, name: str) -> str | None:
        parts = self._parts.get(name)
        if not parts:
            return None
        if len(parts) > 1:
            parts[:] = [self._ctx.op("Sum", parts)]
        return parts[0]


def _differentiated_path(prep: PreparedModel, shapes: ShapeTable) -> set[str]:
    """The tensors computed from the differentiated inputs that the explained tensor needs.

    Raises:
        InvalidModelError: the explained tensor does not depend on the inputs.
        UnsupportedOpError: a node on the path has no rule (control flow included).
    """
    graph = prep.model.graph
    forward = _forward_dependent(graph, prep.inputs, shapes)
    if prep.explained not in forward:
        raise InvalidModelError(
            f"explained: {prep.explained!r} does not depend on the differentiated inputs {prep.inputs} "
            "through float tensors, so its gradient is identically zero"
        )
    path = forward & _backward_reachable(graph, [prep.explained])
    active = [(i, n) for i, n in enumerate(graph.node) if any(o in path for o in n.output if o)]
    opsets = {("" if e.domain == "ai.onnx" else e.domain): int(e.version) for e in prep.model.opset_import}
    _check_rules(active, forward, prep.original_opsets or opsets, opsets)
    return path


def _backprop(
    ctx: VjpContext,
    nodes: Sequence[onnx.NodeProto],
    active_tensors: set[str],
    seeds: Sequence[tuple[str, str]],
    targets: Sequence[str],
    overrides: Mapping[int, VjpRule],
) -> dict[str, str | None]:
    """Run the rules of ``nodes`` (a graph's active nodes, in order) in reverse.

    Args:
        seeds: ``(tensor, gradient)`` pairs to start from (the cotangent of the explained tensor).
        targets: the tensors whose total gradient is returned (``None`` where none flows).
        overrides: the rule of each node (by ``id``) a graph pass rewrote, instead of its op's rule.
    """
    grads = _Accumulator(ctx)
    for seeded, seed in seeds:
        grads.add(seeded, seed)
    for node in reversed(nodes):
        out_grads = [grads.total(o) if o and o in active_tensors else None for o in node.output]
        if all(g is None for g in out_grads):
            continue
        # Subgraph-carrying nodes (If) take gradients for what their subgraphs read, after their inputs.
        reads = differentiable_reads(node)
        wrt = [bool(name) and name in active_tensors for name in reads]
        rule = overrides.get(id(node)) or get_rule(node.op_type, node.domain)
        assert rule is not None  # _check_rules guarantees it; not user input
        results = list(rule(ctx, node, out_grads, wrt))
        if len(results) < len(reads):
            results += [None] * (len(reads) - len(results))
        for name, needed, grad in zip(reads, wrt, results, strict=False):
            if needed and grad is not None:
                grads.add(name, grad)
    return {name: grads.total(name) for name in targets}


def _differentiate(
    prep: PreparedModel, shapes: ShapeTable, ctx: VjpContext, cotangent: str, active_tensors: set[str]
) -> dict[str, str]:
    graph = prep.model.graph
    active = [(i, n) for i, n in enumerate(graph.node) if any(o in active_tensors for o in n.output if o)]

    nodes = [n for _, n in active]
    overrides = rule_overrides(ActiveGraph(graph, nodes, frozenset(active_tensors), prep.explained))
    ctx.forward_producers = {name: node for node in graph.node for name in node.output if name}
    ctx.differentiate_subgraph = _subgraph_differentiator(prep)
    totals = _backprop(ctx, nodes, active_tensors, [(prep.explained, cotangent)], prep.inputs, overrides)
    finals: dict[str, str] = {}
    for name in prep.inputs:
        total = totals[name]
        finals[name] = total if total is not None else ctx.zeros_like(name)
    return finals


def _subgraph_differentiator(prep: PreparedModel) -> SubgraphDifferentiator:
    """The function rules call to differentiate a subgraph (an If branch) of the model ``prep``."""

    def differentiate(
        ctx: VjpContext,
        graph: onnx.GraphProto,
        seeds: Sequence[tuple[str, str]],
        targets: Sequence[str],
        where: str,
    ) -> dict[str, str | None]:
        for name, info in infer_subgraph_shapes(graph, ctx.shapes, prep.model).items():
            ctx.shapes.set(name, info)
        forward = _forward_dependent(graph, targets, ctx.shapes)
        path = forward & _backward_reachable(graph, [name for name, _ in seeds])
        active = [(i, n) for i, n in enumerate(graph.node) if any(o in path for o in n.output if o)]
        _check_rules(active, forward, ctx.file_opsets, ctx.opsets, where)
        return _backprop(ctx, [n for _, n in active], path, seeds, targets, {})

    return differentiate


def _insert_early_nodes(
    graph: onnx.GraphProto, early: Sequence[tuple[onnx.NodeProto, onnx.NodeProto]]
) -> None:
    """Place each ``(anchor, node)`` pair's node right after its forward anchor node.

    Node order is the execution order onnxruntime and the memory estimate of
    :mod:`models.runtime` follow; a node that reads a large forward tensor runs there, so that
    tensor need not stay alive until the backward pass.
    """
    if not early:
        return
    after: dict[int, list[onnx.NodeProto]] = {}
    for anchor, node in early:
        after.setdefault(id(anchor), []).append(node)
    ordered: list[onnx.NodeProto] = []
    for node in graph.node:
        ordered.append(node)
        ordered.extend(after.get(id(node), []))
    del graph.node[:]
    graph.node.extend(ordered)


def _graph_names(graph: onnx.GraphProto) -> set[str]:
    names = (
        {v.name for v in graph.input} | {v.name for v in graph.output} | {t.name for t in graph.initializer}
    )
    for node in graph.node:
        names.update(node.input)
        names.update(node.output)
        if node.name:
            names.add(node.name)
    return names


def _set_shape(value: onnx.ValueInfoProto, dims: Sequence[Dim]) -> None:
    fresh = _value_info(value.name, value.type.tensor_type.elem_type, dims)
    value.type.CopyFrom(fresh.type)


def build_gradient_model(
    model: onnx.ModelProto,
    inputs: Sequence[str] | None = None,
    explained: str | None = None,
    *,
    input_shapes: Mapping[str, Sequence[int]] | None = None,
    expose_weights: bool = True,
    external_data_dir: str | os.PathLike[str] | None = None,
) -> onnx.ModelProto:
    """Add reverse-mode gradient outputs ``J^T · cotangent`` to an ONNX model.

    Args:
        model: any ONNX model (opset 11 or later; older ones are upgraded when possible).
        inputs: float graph inputs to differentiate; default every float graph input that is not
            an initializer.
        explained: the tensor to explain, any float tensor of the graph (e.g. pre-softmax
            logits); default the first float graph output.
        input_shapes: per-sample shapes (batch dimension excluded) pinning the non-batch dims of
            graph inputs, e.g. ``{"image": (3, 224, 224)}``; Conv, pooling and Resize gradients
            need static spatial sizes.
        expose_weights: make every float initializer with at least two elements an optional graph
            input whose stored value is its default (NoiseGrad feeds perturbed weights per run).
            Single numbers and the parameters of Resize, Pad, Clip, Pow and Range stay constant.
        external_data_dir: the folder of the model's external data files, for a model loaded with
            ``load_model(path, external_data=False)`` (weights stay in their files; the few
            constants a rule needs are read from there). The result references the same files,
            relative to that folder (``external_data.save_model`` writes it with copies of them).

    Returns:
        A new model: the original outputs, the explained tensor as an output, a graph input
        ``cotangent_name(explained)`` shaped like the explained tensor, and one output
        ``gradient_name(x)`` per differentiated input ``x`` shaped like ``x``: per sample,
        ``sum_j cotangent[b, j] * d explained[b, j] / d x[b]``. The batch dimension is symbolic,
        unless the model fixes it (see :mod:`models.gradient_graph.batching`): the metadata's
        ``batching`` and ``batch_size`` say which. ``read_gradient_metadata`` reads them back.

    Raises:
        InvalidModelError: bad arguments or model (see :func:`prepare_model`).
        UnsupportedOpError: an op on the path has no rule or uses an unsupported variant.
        GradientGraphError: a shape a rule needs is unknown (pin it with ``input_shapes``).
    """
    if not isinstance(expose_weights, bool):
        raise InvalidModelError(f"expose_weights must be a bool, got {type(expose_weights).__name__}")
    prep = prepare_model(model, inputs, explained, input_shapes, external_data_dir)
    graph = prep.model.graph
    shapes = infer_shape_table(prep.model, prep.batch_inputs, prep.pinned)
    path = _differentiated_path(prep, shapes)
    batch = decide_batch(prep, shapes, path)
    if batch.batching == "fixed":
        shapes = infer_shape_table(prep.model, [], prep.pinned)

    explained_info = shapes.info(prep.explained)
    explained_type = explained_info.elem_type if explained_info else None
    if explained_type is not None and explained_type not in FLOAT_TYPES:
        raise InvalidModelError(
            f"explained: {prep.explained!r} has element type {onnx.TensorProto.DataType.Name(explained_type)}, "
            "expected a float type"
        )
    explained_shape = explained_info.shape if explained_info else None
    explained_type = explained_type or onnx.TensorProto.FLOAT

    cotangent = cotangent_name(prep.explained)
    taken = _graph_names(graph)
    for new_name in [cotangent, *(gradient_name(x) for x in prep.inputs)]:
        if new_name in taken:
            raise InvalidModelError(
                f"the model already has a tensor named {new_name!r}; is it already a gradient model?"
            )

    weights = exposed_weights(graph) if expose_weights else []
    exposed = set(weights)
    tensors = {t.name: t for t in graph.initializer if t.name not in exposed}
    opsets = {("" if e.domain == "ai.onnx" else e.domain): int(e.version) for e in prep.model.opset_import}
    ctx = VjpContext(
        shapes,
        LazyConstants(tensors, prep.external_data_dir),
        opsets,
        taken,
        {id(n): i for i, n in enumerate(graph.node)},
        prep.original_opsets,
    )
    ctx.declare(cotangent, explained_type, explained_shape)
    finals = _differentiate(prep, shapes, ctx, cotangent, path)
    if explained_shape is None:
        # The cotangent input must declare a shape (the ONNX checker requires one).
        raise GradientGraphError(
            f"the rank of the explained tensor {prep.explained!r} is unknown. {PIN_HINT}"
        )

    # Rename before copying the emitted nodes into the graph (extend copies the messages).
    unnamed = {x: grad for x, grad in finals.items() if not ctx.rename_output(grad, gradient_name(x))}
    _insert_early_nodes(graph, ctx.early_nodes)
    graph.node.extend(ctx.nodes)
    for x, grad in unnamed.items():
        graph.node.append(
            helper.make_node("Identity", [grad], [gradient_name(x)], name=ctx.fresh("gradient_out"))
        )
    graph.initializer.extend(ctx.initializers)

    _finish_signature(prep, shapes, weights, explained_type, explained_shape)
    out = prep.model
    out.ir_version = OUTPUT_IR_VERSION
    write_gradient_metadata(
        out,
        GradientMetadata(
            inputs=list(prep.inputs),
            explained=prep.explained,
            cotangent=cotangent,
            gradients={x: gradient_name(x) for x in prep.inputs},
            weights=weights,
            opset=prep.opset,
            batch_size=batch.batch_size,
            batching=batch.batching,
        ),
    )
    try:
        check_model(out)
    except onnx.checker.ValidationError as err:
        raise GradientGraphError(f"internal error: the gradient model fails the ONNX checker: {err}") from err
    return out


def _finish_signature(
    prep: PreparedModel,
    shapes: ShapeTable,
    weights: Sequence[str],
    explained_type: int,
    explained_shape: Sequence[Dim],
) -> None:
    graph = prep.model.graph
    by_name = {v.name: v for v in graph.input}
    for name in prep.batch_inputs:
        info = shapes.info(name)
        if name in by_name and info is not None and info.shape is not None:
            _set_shape(by_name[name], info.shape)
    for name, dims in prep.pinned.items():
        if name not in prep.batch_inputs:
            _set_shape(by_name[name], dims)
    for value in graph.output:
        info = shapes.info(value.name)
        if info is not None and info.shape is not None:
            _set_shape(value, info.shape)
    graph.input.append(_value_info(cotangent_name(prep.explained), explained_type, explained_shape))
    if prep.explained not in {v.name for v in graph.output}:
        graph.output.append(_value_info(prep.explained, explained_type, explained_shape))
    for x in prep.inputs:
        value = by_name[x]
        grad = graph.output.add()
        grad.CopyFrom(value)
        grad.name = gradient_name(x)
        grad.ClearField("doc_string")
    present = set(by_name)
    inits = {t.name: t for t in graph.initializer}
    for name in weights:
        if name not in present:
            tensor = inits[name]
            graph.input.append(helper.make_tensor_value_info(name, tensor.data_type, list(tensor.dims)))
