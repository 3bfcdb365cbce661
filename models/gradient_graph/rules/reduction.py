"""VJP rules of the Reduce* ops (axes as attribute before opset 13/18, as input after; keepdims 0/1).

ReduceMax/ReduceMin share the gradient equally among tied maxima, as ``torch.amax`` does.
"""

from __future__ import annotations

import onnx

from models.gradient_graph.context import VjpContext, get_attr
from models.gradient_graph.rules.common import Grads, Wrt, output_grad, per_input
from models.gradient_graph.rules.registry import register


class _Reduction:
    """The resolved axes of a reduce node and its gradient reshaped to keepdims form."""

    def __init__(self, ctx: VjpContext, node: onnx.NodeProto, grad: str) -> None:
        self.x = node.input[0]
        self.y = node.output[0]
        self.keepdims = bool(int(get_attr(node, "keepdims", 1)))
        noop = bool(int(get_attr(node, "noop_with_empty_axes", 0)))
        axes_attr = get_attr(node, "axes")
        axes_input = node.input[1] if len(node.input) > 1 and node.input[1] else None
        self.identity = False
        self.axes_tensor: str | None = None
        axes: list[int] | None
        if axes_attr is not None:
            axes = [int(a) for a in axes_attr]
        elif axes_input is not None:
            axes = ctx.const_ints(axes_input)
            if axes is None:
                if not self.keepdims:
                    raise ctx.unsupported(node, "keepdims=0 with axes that are not a constant")
                self.axes_tensor = axes_input
        else:
            axes = []
        rank = ctx.rank(self.x)
        if axes is not None and not axes:
            if noop:
                self.identity = True
            elif rank is not None:
                axes = list(range(rank))
        if axes is not None and any(a < 0 for a in axes):
            rank = ctx.require_rank(node, self.x)
            axes = [a + rank if a < 0 else a for a in axes]
        self.axes = None if axes is None else sorted(axes)
        self.grad = grad
        self.y_keep = self.y
        if not self.keepdims and not self.identity:
            if self.axes is None or not self.axes:
                raise ctx.need_static(node, f"the rank of {self.x!r}")
            self.grad = ctx.unsqueeze(grad, self.axes)
            self.y_keep = ctx.unsqueeze(self.y, self.axes)

    def reduce_sum(self, ctx: VjpContext, value: str) -> str:
        if self.axes_tensor is not None:
            return ctx.op("ReduceSum", [value, self.axes_tensor], keepdims=1)
        return ctx.reduce_sum(value, self.axes or [], keepdims=True)


def _refuse_noop(ctx: VjpContext, node: onnx.NodeProto, r: _Reduction) -> None:
    if r.identity:
        raise ctx.unsupported(node, "noop_with_empty_axes=1 with empty axes")


def _out(node: onnx.NodeProto, grad: str) -> list[str | None]:
    return per_input(node, [grad])


@register("ReduceSum")
def reduce_sum(ctx: VjpContext, node: onnx.NodeProto, grads: Grads, wrt: Wrt) -> list[str | None]:
    r = _Reduction(ctx, node, output_grad(grads))
    if r.identity:
        return per_input(node, [r.grad])
    return per_input(node, [ctx.op("Expand", [r.grad, ctx.shape_of(r.x)])])


@register("ReduceMean")
def reduce_mean(ctx: VjpContext, node: onnx.NodeProto, grads: Grads, wrt: Wrt) -> list[str | None]:
    r = _Reduction(ctx, node, output_grad(grads))
    if r.identity:
        return per_input(node, [r.grad])
    sizes = None if r.axes is None else ctx.static_dims(r.x, r.axes)
    if sizes is not None:
        count = 1
        for s in sizes:
            count *= s
        scale = ctx.scalar(1.0 / count, r.x)
    else:
        dtype = ctx.dtype(r.x)
        scale = ctx.op(
            "Div",
            [ctx.op("Cast", [ctx.size_of(r.y)], to=dtype), ctx.op("Cast", [ctx.size_of(r.x)], to=dtype)],
        )
    return per_input(node, [ctx.op("Expand", [ctx.op("Mul", [r.grad, scale]), ctx.shape_of(r.x)])])


@register("ReduceMax", "ReduceMin")
def reduce_extremum(ctx: VjpContext, node: onnx.NodeProto, grads: Grads, wrt: Wrt) -> list[str | None]:
    r = _Reduction(ctx, node, output_grad(grads))
    if r.identity:
        return per_input(node, [r.grad])
    mask = ctx.mask(ctx.op("Equal", [r.x, r.y_keep]), r.x)
    count = r.reduce_sum(ctx, mask)
    return per_input(node, [ctx.op("Mul", [mask, ctx.op("Div", [r.grad, count])])])


@register("ReduceSumSquare")
def reduce_sum_square(ctx: VjpContext, node: onnx.NodeProto, grads: Grads, wrt: Wrt) -> list[str | None]:
    r = _Reduction(ctx, node, output_grad(grads))
    _refuse_noop(ctx, node, r)
    twice = ctx.op("Mul", [r.x, ctx.scalar(2.0, r.x)])
    return per_input(node, [ctx.op("Mul", [r.grad, twice])])


@register("ReduceL1")
def reduce_l1(ctx: VjpContext, node: onnx.NodeProto, grads: Grads, wrt: Wrt) -> list[str | None]:
    r = _Reduction(ctx, node, output_grad(grads))
    _refuse_noop(ctx, node, r)
    return per_input(node, [ctx.op("Mul", [r.grad, ctx.op("Sign", [r.x])])])


@register("ReduceL2")
def reduce_l2(ctx: VjpContext, node: onnx.NodeProto, grads: Grads, wrt: Wrt) -> list[str | None]:
    r = _Reduction(ctx, node, output_grad(grads))
    _refuse_noop(ctx, node, r)
    return per_input(node, [ctx.op("Mul", [ctx.op("Div", [r.grad, r.y_keep]), r.x])])


@register("ReduceLogSumExp")
def reduce_log_sum_exp(ctx: VjpContext, node: onnx.NodeProto, grads: Grads, wrt: Wrt) -> list[str | None]:
    r = _Reduction(ctx, node, output_grad(grads))
    _refuse_noop(ctx, node, r)
    return per_input(node, [ctx.op("Mul", [r.grad, ctx.op("Exp", [ctx.op("Sub", [r.x, r.y_keep])])])])
