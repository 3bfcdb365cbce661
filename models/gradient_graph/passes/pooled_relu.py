"""The pooled ReLU mask: a ReLU read only by max-pools is masked on the pooled side.

A max-pool routes each window's gradient to the element that holds the window's maximum, so
that element's ReLU output equals the pooled value: ``[x > 0]`` at the element is ``[y > 0]``
at the window (``y`` the pool's output). Masking the pooled gradient (a quarter of the elements
for 2×2 or stride-2 pools) and passing the ReLU through gives the same gradient without a mask
at full resolution.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import onnx

from models.gradient_graph.context import VjpContext, get_attr
from models.gradient_graph.passes.registry import ActiveGraph, RuleRewrite, register_pass
from models.gradient_graph.rules.registry import VjpRule

__all__ = ["PooledReluMask"]


def _default_domain(node: onnx.NodeProto) -> bool:
    return node.domain in ("", "ai.onnx")


def _identity(
    ctx: VjpContext, node: onnx.NodeProto, grads: Sequence[str | None], wrt: Sequence[bool]
) -> list[str | None]:
    """A ReLU whose max-pools mask their gradients already passes its gradient through."""
    return [grads[0]]


def _pass_through(rule: VjpRule) -> VjpRule:
    return _identity


def _masked_on_output(rule: VjpRule) -> VjpRule:
    """``rule`` applied to the max-pool's output gradient masked by ``[y > 0]``."""

    def masked(
        ctx: VjpContext, node: onnx.NodeProto, grads: Sequence[str | None], wrt: Sequence[bool]
    ) -> Sequence[str | None]:
        g = grads[0]
        if g is not None:  # None: only the Indices output is used downstream
            x = node.input[0]
            g = ctx.op("Mul", [g, ctx.mask(ctx.op("Greater", [node.output[0], ctx.scalar(0.0, x)]), x)])
        return rule(ctx, node, [g, *grads[1:]], wrt)

    return masked


class PooledReluMask:
    """ReLUs whose every gradient comes through row-major MaxPools: their mask moves to the pools.

    The ReLU's output must be neither the explained tensor nor a graph output (its gradient
    would then not come through the pools only).
    """

    name = "pooled-relu-mask"

    def apply(self, graph: ActiveGraph) -> Iterable[tuple[onnx.NodeProto, RuleRewrite]]:
        consumers = graph.consumers()
        outputs = graph.graph_outputs()
        rewrites: list[tuple[onnx.NodeProto, RuleRewrite]] = []
        for node in graph.nodes:
            if node.op_type != "Relu" or not _default_domain(node):
                continue
            y = node.output[0]
            users = consumers.get(y, [])
            if y == graph.explained or y in outputs or not users:
                continue
            if all(
                user.op_type == "MaxPool"
                and _default_domain(user)
                and list(user.input[:1]) == [y]
                and int(get_attr(user, "storage_order", 0)) == 0
                for user in users
            ):
                rewrites.append((node, _pass_through))
                rewrites.extend((user, _masked_on_output) for user in users)
        return rewrites


register_pass(PooledReluMask())
