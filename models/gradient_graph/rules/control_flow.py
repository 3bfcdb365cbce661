"""VJP rule of If: the backward graph takes the branch the forward took.

The rule emits one ``If`` on the forward node's condition. Each of its branches holds the VJP of
the corresponding forward branch, differentiated like a graph of its own (the builder's
``ctx.differentiate_subgraph``), after a recomputation of the forward branch's tensors that VJP
reads: a branch's tensors are local to it, so the backward branch cannot read the forward one's.
Its outputs are the gradients of the outer tensors the branches read that need one (a branch that
does not use such a tensor returns zeros shaped like it). The gradients reach those tensors like
the gradients of explicit inputs: the builder lists a node's outer reads after its inputs
(:func:`models.gradient_graph.subgraphs.differentiable_reads`).

An If whose condition is a constant never reaches this rule: preparation inlines the taken
branch. Loop and Scan have no rule (the builder refuses them with an UnsupportedOpError).
"""

from __future__ import annotations

from collections.abc import Sequence

import onnx
from onnx import helper

from models.gradient_graph.context import VjpContext, get_attr
from models.gradient_graph.rules.common import Grads, Wrt
from models.gradient_graph.rules.registry import register
from models.gradient_graph.subgraphs import differentiable_reads


@register("If")
def if_(ctx: VjpContext, node: onnx.NodeProto, grads: Grads, wrt: Wrt) -> list[str | None]:
    reads = differentiable_reads(node)
    condition = node.input[0]
    needed = [name for name, w in zip(reads, wrt, strict=False) if w and name != condition]
    results: list[str | None] = [None] * len(reads)
    if not needed:
        return results
    if ctx.differentiate_subgraph is None:
        raise RuntimeError("the If rule needs the builder's subgraph differentiator")
    branches = {attr: _branch_vjp(ctx, node, attr, grads, needed) for attr in ("then_branch", "else_branch")}
    outputs = ctx.op_multi("If", [condition], len(needed), **branches)
    for name, grad in zip(needed, outputs, strict=True):
        ctx.declare(grad, ctx.dtype(name), ctx.shape(name))
        results[reads.index(name)] = grad
    return results


def _branch_vjp(
    ctx: VjpContext, node: onnx.NodeProto, attr: str, grads: Grads, needed: Sequence[str]
) -> onnx.GraphProto:
    """The backward branch for forward branch ``attr``: outputs the gradient of each of ``needed``."""
    graph: onnx.GraphProto = get_attr(node, attr)
    child = ctx.child()
    seeds = [(value.name, grad) for value, grad in zip(graph.output, grads, strict=False) if grad is not None]
    where = f" (in the {attr} of If node {ctx.describe(node)!r})"
    assert ctx.differentiate_subgraph is not None
    totals = ctx.differentiate_subgraph(child, graph, seeds, needed, where)
    outputs = []
    for name in needed:
        total = totals.get(name)
        # Identity: every branch output is a tensor of the branch, under its own name.
        outputs.append(child.op("Identity", [total if total is not None else child.zeros_like(name)]))
    nodes = [*_recomputed(graph, child.early_nodes, child.nodes), *child.nodes]
    values = [
        helper.make_tensor_value_info(out, ctx.dtype(name), None)
        for out, name in zip(outputs, needed, strict=True)
    ]
    return helper.make_graph(nodes, ctx.fresh(attr), [], values, initializer=list(graph.initializer))


def _recomputed(
    graph: onnx.GraphProto,
    early: Sequence[tuple[onnx.NodeProto, onnx.NodeProto]],
    backward: Sequence[onnx.NodeProto],
) -> list[onnx.NodeProto]:
    """The forward branch's nodes (with the rules' early nodes after their anchors) that ``backward`` needs."""
    after: dict[int, list[onnx.NodeProto]] = {}
    for anchor, extra in early:
        after.setdefault(id(anchor), []).append(extra)
    ordered: list[onnx.NodeProto] = []
    for forward in graph.node:
        ordered.append(forward)
        ordered.extend(after.pop(id(forward), []))
    for extras in after.values():  # anchored outside this branch: they read outer tensors only
        ordered.extend(extras)
    needed = {name for n in backward for name in _reads(n)}
    kept: list[onnx.NodeProto] = []
    for candidate in reversed(ordered):
        if any(out in needed for out in candidate.output if out):
            kept.append(candidate)
            needed.update(_reads(candidate))
    return kept[::-1]


def _reads(node: onnx.NodeProto) -> list[str]:
    return [name for name in differentiable_reads(node) if name]
