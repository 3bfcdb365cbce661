"""VJP rules of MaxPool, AveragePool, GlobalAveragePool and GlobalMaxPool.

MaxPool routes each window's gradient to the first maximum in the window, as the ``Indices``
output and torch do. 2-D windows that tile the input (kernel = stride, no padding) find it with
``SpaceToDepth`` + ``ArgMax`` and put the gradient back with ``DepthToSpace``. Other geometries
use the ``Indices`` output: the forward node's when it has one, else a second MaxPool that
outputs them (the forward node stays single-output, which onnxruntime runs in its fast blocked
layout). ONNX indices address the flattened whole input (N·C·H·W), so the gradient is one flat
``ScatterElements``; overlapping windows can pick the same element twice, which needs
``reduction="add"``. A ReLU read only by max-pools is masked on the pooled side (the graph
pass :mod:`models.gradient_graph.passes.pooled_relu`). AveragePool's gradient is a ConvTranspose
of ``g / divisor`` with a ones kernel over ``(N·C, 1, H, W)``; the divisor map
(``count_include_pad``, ``ceil_mode``, pads) is computed at build time from the static sizes.
"""

from __future__ import annotations

from functools import reduce

import numpy as np
import onnx
from onnx import helper

from models.gradient_graph.context import VjpContext, get_attr
from models.gradient_graph.errors import GradientGraphError
from models.gradient_graph.rules.common import Grads, Wrt, output_grad
from models.gradient_graph.rules.conv import WindowGeometry, window_geometry
from models.gradient_graph.rules.registry import register


@register("MaxPool")
def max_pool(ctx: VjpContext, node: onnx.NodeProto, grads: Grads, wrt: Wrt) -> list[str | None]:
    g = grads[0]
    if g is None:  # only the Indices output is used downstream: no gradient flows
        return [None]
    if int(get_attr(node, "storage_order", 0)) != 0:
        raise ctx.unsupported(node, "storage_order=1 (column-major indices)")
    x = node.input[0]
    tiled = _tiled_max_pool(ctx, node, x, g)
    if tiled is not None:
        return [tiled]
    if len(node.output) > 1 and node.output[1]:
        indices = node.output[1]
    else:
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        # Beside the forward node: the full-size input need not live on until the backward pass.
        indices = ctx.early_op_multi(node, "MaxPool", [x], 2, **attrs)[1]
        ctx.declare(indices, onnx.TensorProto.INT64, ctx.shape(node.output[0]))
    flat = ctx.ints([-1])
    count = ctx.op("Reshape", [ctx.size_of(x), ctx.ints([1])])
    zeros = ctx.zeros(count, x)
    flat_idx = ctx.op("Reshape", [indices, flat])
    flat_g = ctx.op("Reshape", [g, flat])
    if _windows_overlap(ctx, node, x):
        scattered = ctx.scatter_add(node, zeros, flat_idx, flat_g, 0)
    else:
        scattered = ctx.op("ScatterElements", [zeros, flat_idx, flat_g], axis=0)
    return [ctx.op("Reshape", [scattered, ctx.shape_of(x)])]


def _tiled_max_pool(ctx: VjpContext, node: onnx.NodeProto, x: str, g: str) -> str | None:
    """The VJP of a 2-D max-pool whose square windows tile the input (no overlap, no padding).

    ``SpaceToDepth`` lays each window's ``k²`` elements along a new axis; ``ArgMax`` picks the first
    maximum in row-major window order (as the ``Indices`` output does), and ``DepthToSpace`` puts
    the routed gradient back. Several times faster in onnxruntime than ``MaxPool`` with
    ``Indices`` and a scatter, and no index arithmetic. ``None`` when the geometry does not fit.
    """
    if ctx.rank(x) != 4 or int(get_attr(node, "ceil_mode", 0)):
        return None
    y = node.output[0]
    try:
        geometry = window_geometry(ctx, node, x, y, None)
    except GradientGraphError:
        return None
    k = geometry.kernel[0]
    channels = ctx.static_dims(x, [1])
    if (
        channels is None
        or k < 2
        or geometry.kernel != [k, k]
        or geometry.strides != [k, k]
        or geometry.dilations != [1, 1]
        or any(geometry.pad_begin + geometry.pad_end)
        or any(size != out * k for size, out in zip(geometry.inputs, geometry.outputs, strict=True))
    ):
        return None
    c = channels[0]
    rows, cols = geometry.outputs
    candidates = ctx.op(
        "Reshape", [ctx.op("SpaceToDepth", [x], blocksize=k), ctx.ints([-1, k * k, c, rows, cols])]
    )
    first = ctx.op("ArgMax", [candidates], axis=1, keepdims=1)
    offsets = ctx.const(np.arange(k * k, dtype=np.int64).reshape(1, k * k, 1, 1, 1))
    routed = ctx.op(
        "Mul",
        [
            ctx.mask(ctx.op("Equal", [first, offsets]), x),
            ctx.op("Reshape", [g, ctx.ints([-1, 1, c, rows, cols])]),
        ],
    )
    return ctx.op(
        "DepthToSpace",
        [ctx.op("Reshape", [routed, ctx.ints([-1, k * k * c, rows, cols])])],
        blocksize=k,
        mode="DCR",
    )


def _windows_overlap(ctx: VjpContext, node: onnx.NodeProto, x: str) -> bool:
    kernel = [int(k) for k in get_attr(node, "kernel_shape", [])]
    spatial = len(kernel)
    strides = [int(v) for v in get_attr(node, "strides", [1] * spatial)]
    dilations = [int(v) for v in get_attr(node, "dilations", [1] * spatial)]
    return any((k - 1) * d + 1 > s for k, s, d in zip(kernel, strides, dilations, strict=False))


def _divisors(geometry: WindowGeometry, include_pad: bool) -> list[np.ndarray]:
    """Per axis: how many elements each output window averages (as onnxruntime counts them)."""
    per_axis = []
    for size, out, k, s, d, pb, pe in zip(
        geometry.inputs,
        geometry.outputs,
        geometry.kernel,
        geometry.strides,
        geometry.dilations,
        geometry.pad_begin,
        geometry.pad_end,
        strict=False,
    ):
        counts = []
        for o in range(out):
            taps = o * s - pb + d * np.arange(k)
            low, high = (-pb, size + pe) if include_pad else (0, size)
            counts.append(int(np.count_nonzero((taps >= low) & (taps < high))))
        per_axis.append(np.asarray(counts, dtype=np.float64))
    return per_axis


@register("AveragePool")
def average_pool(ctx: VjpContext, node: onnx.NodeProto, grads: Grads, wrt: Wrt) -> list[str | None]:
    g = output_grad(grads)
    x, y = node.input[0], node.output[0]
    geometry = window_geometry(ctx, node, x, y, None)
    include_pad = bool(int(get_attr(node, "count_include_pad", 0)))
    per_axis = _divisors(geometry, include_pad)
    if np.any([np.any(c == 0) for c in per_axis]):
        raise ctx.unsupported(node, "a pooling window lies entirely in the padding")
    divisor = reduce(np.multiply.outer, per_axis)
    uniform = bool(np.all(divisor == divisor.reshape(-1)[0]))
    if uniform:
        scaled = g
        weight_value = 1.0 / float(divisor.reshape(-1)[0])
    else:
        scaled = ctx.op("Mul", [g, ctx.full_const(1.0 / divisor, x)])
        weight_value = 1.0
    weights = ctx.full_const(np.full([1, 1, *geometry.kernel], weight_value), x)
    # Every channel uses the same ones kernel: fold channels into the batch and run one group.
    planes = ctx.op("Reshape", [scaled, ctx.ints([-1, 1, *geometry.outputs])])
    spread = geometry.transpose(ctx, planes, weights)
    return [ctx.op("Reshape", [spread, ctx.shape_of(x)])]


@register("GlobalAveragePool")
def global_average_pool(ctx: VjpContext, node: onnx.NodeProto, grads: Grads, wrt: Wrt) -> list[str | None]:
    g = output_grad(grads)
    x = node.input[0]
    rank = ctx.require_rank(node, x)
    sizes = ctx.static_dims(x, list(range(2, rank)))
    if sizes is not None:
        scaled = ctx.op("Mul", [g, ctx.scalar(1.0 / float(np.prod(sizes)), x)])
    else:
        ratio = ctx.op(
            "Div",
            [
                ctx.op("Cast", [ctx.size_of(g)], to=ctx.dtype(x)),
                ctx.op("Cast", [ctx.size_of(x)], to=ctx.dtype(x)),
            ],
        )
        scaled = ctx.op("Mul", [g, ratio])
    return [ctx.op("Expand", [scaled, ctx.shape_of(x)])]


@register("GlobalMaxPool")
def global_max_pool(ctx: VjpContext, node: onnx.NodeProto, grads: Grads, wrt: Wrt) -> list[str | None]:
    # Ties share the gradient equally (as torch.amax).
    g = output_grad(grads)
    x, y = node.input[0], node.output[0]
    rank = ctx.require_rank(node, x)
    mask = ctx.mask(ctx.op("Equal", [x, y]), x)
    count = ctx.reduce_sum(mask, list(range(2, rank)), keepdims=True)
    return [ctx.op("Mul", [mask, ctx.op("Div", [g, count])])]
