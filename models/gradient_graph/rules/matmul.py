"""VJP rules of MatMul (numpy semantics: batched, broadcast, 1-D operands) and Gemm."""

from __future__ import annotations

import onnx

from models.gradient_graph.context import VjpContext, get_attr
from models.gradient_graph.rules.common import Grads, Wrt, output_grad
from models.gradient_graph.rules.registry import register
from models.gradient_graph.shapes import Dim


def _swap_last(ctx: VjpContext, x: str, rank: int) -> str:
    perm = list(range(rank - 2)) + [rank - 1, rank - 2]
    return ctx.op("Transpose", [x], perm=perm)


@register("MatMul")
def matmul(ctx: VjpContext, node: onnx.NodeProto, grads: Grads, wrt: Wrt) -> list[str | None]:
    g = output_grad(grads)
    a, b = node.input[0], node.input[1]
    ra, rb = ctx.require_rank(node, a), ctx.require_rank(node, b)
    if ra == 1 and rb == 1:
        # y = a . b (a scalar): ga = g * b, gb = g * a
        return [ctx.op("Mul", [g, b]) if wrt[0] else None, ctx.op("Mul", [g, a]) if wrt[1] else None]
    shape_a = ctx.shape(a) or (None,) * ra
    shape_b = ctx.shape(b) or (None,) * rb
    # Promote 1-D operands to matrices, as numpy does, and the gradient with them.
    mat_a: tuple[Dim, ...] = (1, *shape_a) if ra == 1 else tuple(shape_a)
    mat_b: tuple[Dim, ...] = (*shape_b, 1) if rb == 1 else tuple(shape_b)
    a2 = ctx.unsqueeze(a, [0]) if ra == 1 else a
    b2 = ctx.unsqueeze(b, [-1]) if rb == 1 else b
    g2 = g
    if ra == 1:
        g2 = ctx.unsqueeze(g2, [-2] if rb > 1 else [0])
    if rb == 1:
        g2 = ctx.unsqueeze(g2, [-1])
    rank = max(len(mat_a), len(mat_b))
    out_shape = ctx.shape(node.output[0])
    batch: tuple[Dim, ...]
    if out_shape is not None:
        batch = tuple(out_shape[: len(out_shape) - (0 if ra == 1 else 1) - (0 if rb == 1 else 1)])
    else:
        batch = (None,) * (rank - 2)
    n, k, m = mat_a[-2], mat_a[-1], mat_b[-1]
    out: list[str | None] = [None, None]
    if wrt[0]:
        full = ctx.op("MatMul", [g2, _swap_last(ctx, b2, len(mat_b))])
        ga = _reduce_matrix(ctx, full, a, ra == 1, (*batch, n, k))
        out[0] = ctx.squeeze(ga, [0]) if ra == 1 else ga
    if wrt[1]:
        full = ctx.op("MatMul", [_swap_last(ctx, a2, len(mat_a)), g2])
        gb = _reduce_matrix(ctx, full, b, rb == 1, (*batch, k, m))
        out[1] = ctx.squeeze(gb, [-1]) if rb == 1 else gb
    return out


def _reduce_matrix(
    ctx: VjpContext, grad: str, operand: str, promoted: bool, grad_shape: tuple[Dim, ...]
) -> str:
    """Sum a batched matrix gradient over the batch dims its operand was broadcast along."""
    if not promoted:
        return ctx.reduce_to_shape(grad, operand, grad_shape)
    # A promoted 1-D operand is a plain matrix: every batch dim was broadcast.
    lead = len(grad_shape) - 2
    return ctx.reduce_sum(grad, list(range(lead)), keepdims=False) if lead else grad


@register("Gemm")
def gemm(ctx: VjpContext, node: onnx.NodeProto, grads: Grads, wrt: Wrt) -> list[str | None]:
    # Y = alpha * A' B' + beta * C with A' = A or A^T, B' = B or B^T.
    g = output_grad(grads)
    a, b = node.input[0], node.input[1]
    alpha = float(get_attr(node, "alpha", 1.0))
    beta = float(get_attr(node, "beta", 1.0))
    trans_a = int(get_attr(node, "transA", 0))
    trans_b = int(get_attr(node, "transB", 0))
    out: list[str | None] = [None] * len(node.input)
    if wrt[0]:
        if trans_a:
            out[0] = ctx.op("Gemm", [b, g], alpha=alpha, transA=trans_b, transB=1)
        else:
            out[0] = ctx.op("Gemm", [g, b], alpha=alpha, transB=1 - trans_b)
    if wrt[1]:
        if trans_b:
            out[1] = ctx.op("Gemm", [g, a], alpha=alpha, transA=1, transB=trans_a)
        else:
            out[1] = ctx.op("Gemm", [a, g], alpha=alpha, transA=1 - trans_a)
    if len(node.input) > 2 and node.input[2] and wrt[2]:
        scaled = g if beta == 1.0 else ctx.op("Mul", [g, ctx.scalar(beta, node.output[0])])
        out[2] = ctx.reduce_to_shape(scaled, node.input[2], ctx.shape(node.output[0]))
    return out
