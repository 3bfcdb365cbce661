"""VJP rules of elementwise arithmetic: broadcasting ops reduce the gradient to each operand's shape.

Ops: Add, Sub, Mul, Div, Neg, Pow, Sqrt, Exp, Log, Abs, Reciprocal, Erf, trigonometric and
hyperbolic functions, Sum, Mean, Max, Min, Where, Clip, Identity, Dropout, Cast, and the
piecewise-constant Floor, Ceil, Round, Sign, Hardmax.
"""

from __future__ import annotations

import math

import numpy as np
import onnx

from models.gradient_graph.context import VjpContext
from models.gradient_graph.rules.common import Grads, Wrt, output_grad
from models.gradient_graph.rules.registry import register


def _reduce(ctx: VjpContext, grad: str, operand: str, node: onnx.NodeProto) -> str:
    return ctx.reduce_to_shape(grad, operand, ctx.shape(node.output[0]))


@register("Add", "Sum")
def add(ctx: VjpContext, node: onnx.NodeProto, grads: Grads, wrt: Wrt) -> list[str | None]:
    g = output_grad(grads)
    return [_reduce(ctx, g, x, node) if w else None for x, w in zip(node.input, wrt, strict=False)]


@register("Mean")
def mean(ctx: VjpContext, node: onnx.NodeProto, grads: Grads, wrt: Wrt) -> list[str | None]:
    scaled = ctx.op("Mul", [output_grad(grads), ctx.scalar(1.0 / len(node.input), node.output[0])])
    return [_reduce(ctx, scaled, x, node) if w else None for x, w in zip(node.input, wrt, strict=False)]


@register("Sub")
def sub(ctx: VjpContext, node: onnx.NodeProto, grads: Grads, wrt: Wrt) -> list[str | None]:
    g = output_grad(grads)
    a, b = node.input[0], node.input[1]
    return [
        _reduce(ctx, g, a, node) if wrt[0] else None,
        _reduce(ctx, ctx.op("Neg", [g]), b, node) if wrt[1] else None,
    ]


@register("Mul")
def mul(ctx: VjpContext, node: onnx.NodeProto, grads: Grads, wrt: Wrt) -> list[str | None]:
    g = output_grad(grads)
    a, b = node.input[0], node.input[1]
    return [
        _reduce(ctx, ctx.op("Mul", [g, b]), a, node) if wrt[0] else None,
        _reduce(ctx, ctx.op("Mul", [g, a]), b, node) if wrt[1] else None,
    ]


@register("Div")
def div(ctx: VjpContext, node: onnx.NodeProto, grads: Grads, wrt: Wrt) -> list[str | None]:
    g = output_grad(grads)
    a, b, y = node.input[0], node.input[1], node.output[0]
    g_over_b = ctx.op("Div", [g, b])
    # d(a/b)/db = -a/b^2 = -(a/b)/b: reuse the forward quotient.
    return [
        _reduce(ctx, g_over_b, a, node) if wrt[0] else None,
        _reduce(ctx, ctx.op("Neg", [ctx.op("Mul", [g_over_b, y])]), b, node) if wrt[1] else None,
    ]


@register("Neg")
def neg(ctx: VjpContext, node: onnx.NodeProto, grads: Grads, wrt: Wrt) -> list[str | None]:
    return [ctx.op("Neg", [output_grad(grads)])]


@register("Pow")
def pow_(ctx: VjpContext, node: onnx.NodeProto, grads: Grads, wrt: Wrt) -> list[str | None]:
    g = output_grad(grads)
    a, b, y = node.input[0], node.input[1], node.output[0]
    out: list[str | None] = [None, None]
    if wrt[0]:
        exponent = ctx.const_value(b)
        if exponent is not None and exponent.size == 1:
            e = float(exponent.reshape(-1)[0])
            if e == 1.0:
                local = None
            elif e == 2.0:
                local = ctx.op("Mul", [a, ctx.scalar(2.0, a)])
            else:
                power = ctx.op("Pow", [a, ctx.const(np.asarray(e - 1.0, dtype=ctx.np_dtype(b)))])
                local = ctx.op("Mul", [power, ctx.scalar(e, a)])
        else:
            b_minus_1 = ctx.op("Sub", [b, ctx.scalar(1.0, b)])
            local = ctx.op("Mul", [ctx.op("Pow", [a, b_minus_1]), ctx.cast_like(b, a)])
        out[0] = _reduce(ctx, g if local is None else ctx.op("Mul", [g, local]), a, node)
    if wrt[1]:
        # d(a^b)/db = a^b * ln(a)
        local_b = ctx.op("Mul", [y, ctx.op("Log", [a])])
        out[1] = _reduce(ctx, ctx.cast_like(ctx.op("Mul", [g, local_b]), b), b, node)
    return out


@register("Sqrt")
def sqrt(ctx: VjpContext, node: onnx.NodeProto, grads: Grads, wrt: Wrt) -> list[str | None]:
    y = node.output[0]
    return [ctx.op("Div", [ctx.op("Mul", [output_grad(grads), ctx.scalar(0.5, y)]), y])]


@register("Exp")
def exp(ctx: VjpContext, node: onnx.NodeProto, grads: Grads, wrt: Wrt) -> list[str | None]:
    return [ctx.op("Mul", [output_grad(grads), node.output[0]])]


@register("Log")
def log(ctx: VjpContext, node: onnx.NodeProto, grads: Grads, wrt: Wrt) -> list[str | None]:
    return [ctx.op("Div", [output_grad(grads), node.input[0]])]


@register("Abs")
def abs_(ctx: VjpContext, node: onnx.NodeProto, grads: Grads, wrt: Wrt) -> list[str | None]:
    return [ctx.op("Mul", [output_grad(grads), ctx.op("Sign", [node.input[0]])])]


@register("Reciprocal")
def reciprocal(ctx: VjpContext, node: onnx.NodeProto, grads: Grads, wrt: Wrt) -> list[str | None]:
    y = node.output[0]
    return [ctx.op("Neg", [ctx.op("Mul", [output_grad(grads), ctx.op("Mul", [y, y])])])]


@register("Erf")
def erf(ctx: VjpContext, node: onnx.NodeProto, grads: Grads, wrt: Wrt) -> list[str | None]:
    x = node.input[0]
    gauss = ctx.op("Exp", [ctx.op("Neg", [ctx.op("Mul", [x, x])])])
    return [
        ctx.op("Mul", [output_grad(grads), ctx.op("Mul", [gauss, ctx.scalar(2.0 / math.sqrt(math.pi), x)])])
    ]


@register("Sin")
def sin(ctx: VjpContext, node: onnx.NodeProto, grads: Grads, wrt: Wrt) -> list[str | None]:
    return [ctx.op("Mul", [output_grad(grads), ctx.op("Cos", [node.input[0]])])]


@register("Cos")
def cos(ctx: VjpContext, node: onnx.NodeProto, grads: Grads, wrt: Wrt) -> list[str | None]:
    return [ctx.op("Neg", [ctx.op("Mul", [output_grad(grads), ctx.op("Sin", [node.input[0]])])])]


@register("Floor", "Ceil", "Round", "Sign", "Hardmax")
def piecewise_constant(ctx: VjpContext, node: onnx.NodeProto, grads: Grads, wrt: Wrt) -> list[str | None]:
    # Zero almost everywhere (as in PyTorch): no contribution.
    return [None]


@register("Identity")
def identity(ctx: VjpContext, node: onnx.NodeProto, grads: Grads, wrt: Wrt) -> list[str | None]:
    return [output_grad(grads)]


@register("Dropout")
def dropout(ctx: VjpContext, node: onnx.NodeProto, grads: Grads, wrt: Wrt) -> list[str | None]:
    # Inference graphs: Dropout is the identity (a training-mode Dropout is not an explanation target).
    if len(node.input) > 2 and node.input[2]:
        training = ctx.const_value(node.input[2])
        if training is None or bool(np.asarray(training).reshape(-1)[0]):
            raise ctx.unsupported(node, "training_mode is not a constant false")
    return [grads[0], None, None][: len(node.input)]


@register("Cast")
def cast(ctx: VjpContext, node: onnx.NodeProto, grads: Grads, wrt: Wrt) -> list[str | None]:
    return [ctx.cast_like(output_grad(grads), node.input[0])]


@register("Max", "Min")
def max_min(ctx: VjpContext, node: onnx.NodeProto, grads: Grads, wrt: Wrt) -> list[str | None]:
    # Ties share the gradient equally, as torch.maximum / torch.minimum do.
    g, y = output_grad(grads), node.output[0]
    if len(node.input) == 1:
        return [g]
    masks = [ctx.mask(ctx.op("Equal", [x, y]), y) for x in node.input]
    share = ctx.op("Div", [g, ctx.op("Sum", masks)])
    return [
        _reduce(ctx, ctx.op("Mul", [share, m]), x, node) if w else None
        for x, m, w in zip(node.input, masks, wrt, strict=False)
    ]


@register("Where")
def where(ctx: VjpContext, node: onnx.NodeProto, grads: Grads, wrt: Wrt) -> list[str | None]:
    g = output_grad(grads)
    cond, a, b = node.input
    zero = ctx.scalar(0.0, node.output[0])
    return [
        None,
        _reduce(ctx, ctx.op("Where", [cond, g, zero]), a, node) if wrt[1] else None,
        _reduce(ctx, ctx.op("Where", [cond, zero, g]), b, node) if wrt[2] else None,
    ]


def _clip_bounds(ctx: VjpContext, node: onnx.NodeProto) -> tuple[str | None, str | None]:
    x = node.input[0]
    if ctx.opset < 11 or (len(node.input) == 1 and any(a.name in ("min", "max") for a in node.attribute)):
        low = next((a.f for a in node.attribute if a.name == "min"), None)
        high = next((a.f for a in node.attribute if a.name == "max"), None)
        return (
            None if low is None else ctx.scalar(low, x),
            None if high is None else ctx.scalar(high, x),
        )
    low_name = node.input[1] if len(node.input) > 1 and node.input[1] else None
    high_name = node.input[2] if len(node.input) > 2 and node.input[2] else None
    return low_name, high_name


@register("Clip")
def clip(ctx: VjpContext, node: onnx.NodeProto, grads: Grads, wrt: Wrt) -> list[str | None]:
    # Pass-through where min <= x <= max (both inclusive, as torch.clamp).
    g, x = output_grad(grads), node.input[0]
    low, high = _clip_bounds(ctx, node)
    conds: list[str] = []
    if low is not None:
        conds.append(ctx.op("Not", [ctx.op("Less", [x, low])]))
    if high is not None:
        conds.append(ctx.op("Not", [ctx.op("Greater", [x, high])]))
    out: list[str | None] = [None] * len(node.input)
    if wrt[0]:
        if not conds:
            out[0] = g
        else:
            inside = conds[0] if len(conds) == 1 else ctx.op("And", conds)
            out[0] = ctx.op("Mul", [g, ctx.mask(inside, x)])
    if len(wrt) > 1 and wrt[1] and low is not None:
        out[1] = _reduce(ctx, ctx.op("Mul", [g, ctx.mask(ctx.op("Less", [x, low]), x)]), node.input[1], node)
    if len(wrt) > 2 and wrt[2] and high is not None:
        out[2] = _reduce(
            ctx, ctx.op("Mul", [g, ctx.mask(ctx.op("Greater", [x, high]), x)]), node.input[2], node
        )
    return out


def _inverse_sqrt_rule(
    ctx: VjpContext, node: onnx.NodeProto, grads: Grads, inside: str, sign: float
) -> list[str | None]:
    return [
        ctx.op(
            "Mul",
            [
                output_grad(grads),
                ctx.op("Mul", [ctx.op("Reciprocal", [ctx.op("Sqrt", [inside])]), ctx.scalar(sign, inside)]),
            ],
        )
    ]


@register("Tan")
def tan(ctx: VjpContext, node: onnx.NodeProto, grads: Grads, wrt: Wrt) -> list[str | None]:
    y = node.output[0]
    return [ctx.op("Mul", [output_grad(grads), ctx.op("Add", [ctx.op("Mul", [y, y]), ctx.scalar(1.0, y)])])]


@register("Atan")
def atan(ctx: VjpContext, node: onnx.NodeProto, grads: Grads, wrt: Wrt) -> list[str | None]:
    x = node.input[0]
    return [ctx.op("Div", [output_grad(grads), ctx.op("Add", [ctx.op("Mul", [x, x]), ctx.scalar(1.0, x)])])]


@register("Asin", "Acos")
def asin_acos(ctx: VjpContext, node: onnx.NodeProto, grads: Grads, wrt: Wrt) -> list[str | None]:
    x = node.input[0]
    inside = ctx.op("Sub", [ctx.scalar(1.0, x), ctx.op("Mul", [x, x])])
    return _inverse_sqrt_rule(ctx, node, grads, inside, 1.0 if node.op_type == "Asin" else -1.0)


@register("Asinh", "Acosh")
def asinh_acosh(ctx: VjpContext, node: onnx.NodeProto, grads: Grads, wrt: Wrt) -> list[str | None]:
    x = node.input[0]
    inside = ctx.op("Add" if node.op_type == "Asinh" else "Sub", [ctx.op("Mul", [x, x]), ctx.scalar(1.0, x)])
    return _inverse_sqrt_rule(ctx, node, grads, inside, 1.0)


@register("Atanh")
def atanh(ctx: VjpContext, node: onnx.NodeProto, grads: Grads, wrt: Wrt) -> list[str | None]:
    x = node.input[0]
    return [ctx.op("Div", [output_grad(grads), ctx.op("Sub", [ctx.scalar(1.0, x), ctx.op("Mul", [x, x])])])]


@register("Sinh")
def sinh(ctx: VjpContext, node: onnx.NodeProto, grads: Grads, wrt: Wrt) -> list[str | None]:
    return [ctx.op("Mul", [output_grad(grads), ctx.op("Cosh", [node.input[0]])])]


@register("Cosh")
def cosh(ctx: VjpContext, node: onnx.NodeProto, grads: Grads, wrt: Wrt) -> list[str | None]:
    return [ctx.op("Mul", [output_grad(grads), ctx.op("Sinh", [node.input[0]])])]
