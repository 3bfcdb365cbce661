"""VJP rules of normalisation: BatchNormalization (inference), InstanceNormalization, LayerNormalization,
LpNormalization.

For normalisation over axes A with ``xhat = (x - mean) * inv_std`` and ``y = scale * xhat + bias``:
``gx = inv_std * (gh - mean_A(gh) - xhat * mean_A(gh * xhat))`` with ``gh = g * scale``
(Ioffe & Szegedy 2015; Ba et al. 2016). BatchNormalization in inference mode uses running
statistics, so it is an affine map per channel. LayerNormalization reuses the forward node's
``Mean`` and ``InvStdDev`` outputs.
"""

from __future__ import annotations

import onnx

from models.gradient_graph.context import VjpContext, get_attr
from models.gradient_graph.rules.common import Grads, Wrt, output_grad, refuse_parameter_gradients
from models.gradient_graph.rules.registry import register


def _channel_view(ctx: VjpContext, node: onnx.NodeProto, vector: str, x: str) -> str:
    """A per-channel vector [C] reshaped to broadcast over x of shape [N, C, ...]."""
    rank = ctx.require_rank(node, x)
    return ctx.op("Reshape", [vector, ctx.ints([-1] + [1] * (rank - 2))]) if rank > 2 else vector


@register("BatchNormalization")
def batch_normalization(ctx: VjpContext, node: onnx.NodeProto, grads: Grads, wrt: Wrt) -> list[str | None]:
    refuse_parameter_gradients(ctx, node, wrt, "scale, bias or statistics")
    if int(get_attr(node, "training_mode", 0)) or len([o for o in node.output if o]) > 1:
        raise ctx.unsupported(node, "training mode (batch statistics); export the model in eval mode")
    g = output_grad(grads)
    x, scale, var = node.input[0], node.input[1], node.input[4]
    eps = float(get_attr(node, "epsilon", 1e-5))
    factor = ctx.op("Div", [scale, ctx.op("Sqrt", [ctx.op("Add", [var, ctx.scalar(eps, var)])])])
    factor = ctx.cast_like(factor, x)
    return [ctx.op("Mul", [g, _channel_view(ctx, node, factor, x)]), None, None, None, None]


def _normalised_gradient(ctx: VjpContext, gh: str, xhat: str, inv_std: str, axes: list[int]) -> str:
    mean_gh = ctx.reduce_mean(gh, axes)
    mean_ghx = ctx.reduce_mean(ctx.op("Mul", [gh, xhat]), axes)
    inner = ctx.op("Sub", [ctx.op("Sub", [gh, mean_gh]), ctx.op("Mul", [xhat, mean_ghx])])
    return ctx.op("Mul", [inner, inv_std])


@register("InstanceNormalization")
def instance_normalization(ctx: VjpContext, node: onnx.NodeProto, grads: Grads, wrt: Wrt) -> list[str | None]:
    refuse_parameter_gradients(ctx, node, wrt, "scale, bias or statistics")
    g = output_grad(grads)
    x, scale = node.input[0], node.input[1]
    rank = ctx.require_rank(node, x)
    axes = list(range(2, rank))
    eps = float(get_attr(node, "epsilon", 1e-5))
    centred = ctx.op("Sub", [x, ctx.reduce_mean(x, axes)])
    var = ctx.reduce_mean(ctx.op("Mul", [centred, centred]), axes)
    inv_std = ctx.op("Reciprocal", [ctx.op("Sqrt", [ctx.op("Add", [var, ctx.scalar(eps, x)])])])
    xhat = ctx.op("Mul", [centred, inv_std])
    gh = ctx.op("Mul", [g, _channel_view(ctx, node, scale, x)])
    return [_normalised_gradient(ctx, gh, xhat, inv_std, axes), None, None]


@register("LayerNormalization")
def layer_normalization(ctx: VjpContext, node: onnx.NodeProto, grads: Grads, wrt: Wrt) -> list[str | None]:
    refuse_parameter_gradients(ctx, node, wrt, "scale, bias or statistics")
    if any(grad is not None for grad in grads[1:]):
        raise ctx.unsupported(node, "its Mean or InvStdDev output is used on the differentiated path")
    g = output_grad(grads)
    x, scale = node.input[0], node.input[1]
    rank = ctx.require_rank(node, x)
    axis = int(get_attr(node, "axis", -1))
    axis = axis + rank if axis < 0 else axis
    axes = list(range(axis, rank))
    stash = int(get_attr(node, "stash_type", 1))
    stats_type = onnx.TensorProto.FLOAT if stash == 1 else ctx.dtype(x)
    shape_x = ctx.shape(x)
    stats_shape = None if shape_x is None else (*shape_x[:axis], *([1] * (rank - axis)))
    mean = ctx.cast_like(ctx.request_output(node, 1, stats_type, stats_shape), x)
    inv_std = ctx.cast_like(ctx.request_output(node, 2, stats_type, stats_shape), x)
    xhat = ctx.op("Mul", [ctx.op("Sub", [x, mean]), inv_std])
    gh = ctx.op("Mul", [g, scale])
    return [_normalised_gradient(ctx, gh, xhat, inv_std, axes), None, None]


@register("LpNormalization")
def lp_normalization(ctx: VjpContext, node: onnx.NodeProto, grads: Grads, wrt: Wrt) -> list[str | None]:
    # y = x / n with n = ||x||_p along axis: gx = (g - d * sum(g * y)) / n, d = y (p=2) or sign(x) (p=1).
    g = output_grad(grads)
    x, y = node.input[0], node.output[0]
    axis = int(get_attr(node, "axis", -1))
    p = int(get_attr(node, "p", 2))
    if p not in (1, 2):
        raise ctx.unsupported(node, f"p={p} (expected 1 or 2)")
    norm = (
        ctx.op("ReduceL2" if p == 2 else "ReduceL1", [x], axes=[axis], keepdims=1)
        if ctx.opset < 18
        else ctx.op("ReduceL2" if p == 2 else "ReduceL1", [x, ctx.ints([axis])], keepdims=1)
    )
    direction = y if p == 2 else ctx.op("Sign", [x])
    inner = ctx.reduce_sum(ctx.op("Mul", [g, y]), [axis], keepdims=True)
    return [ctx.op("Div", [ctx.op("Sub", [g, ctx.op("Mul", [direction, inner])]), norm])]
