"""VJP rules of Conv and ConvTranspose with respect to their data input (never their weights).

The input gradient of a strided Conv is a ConvTranspose with the same weights, strides,
dilations and groups; ``output_padding`` restores the rows a strided Conv skipped, which needs the
static spatial sizes (pin them with ``input_shapes``). With unit strides it is a Conv with the
spatially flipped, channel-swapped kernel instead (same result, faster in onnxruntime). The input
gradient of a ConvTranspose is a Conv.
"""

from __future__ import annotations

from dataclasses import dataclass

import onnx

from models.gradient_graph.context import VjpContext, get_attr
from models.gradient_graph.rules.common import Grads, Wrt, output_grad, per_input, refuse_parameter_gradients
from models.gradient_graph.rules.registry import register


@dataclass(frozen=True)
class WindowGeometry:
    """Per spatial axis: input size, output size, kernel, stride, dilation, begin and end padding."""

    inputs: list[int]
    outputs: list[int]
    kernel: list[int]
    strides: list[int]
    dilations: list[int]
    pad_begin: list[int]
    pad_end: list[int]

    def transpose_padding(self) -> tuple[list[int], list[int]]:
        """``pads`` and ``output_padding`` of the ConvTranspose that maps outputs back onto inputs."""
        pads_end, output_padding = [], []
        for size, out, k, s, d, pb in zip(
            self.inputs, self.outputs, self.kernel, self.strides, self.dilations, self.pad_begin, strict=False
        ):
            full = (out - 1) * s + (k - 1) * d + 1 - pb
            pads_end.append(max(full - size, 0))
            output_padding.append(max(size - full, 0))
        return self.pad_begin + pads_end, output_padding

    def transpose(self, ctx: VjpContext, g: str, w: str, group: int | None = None) -> str:
        """``ConvTranspose(g, w)`` over this geometry: maps a gradient at the outputs back onto the inputs."""
        pads, output_padding = self.transpose_padding()
        return ctx.op(
            "ConvTranspose",
            [g, w],
            kernel_shape=self.kernel,
            strides=self.strides,
            dilations=self.dilations,
            pads=pads,
            output_padding=output_padding if any(output_padding) else None,
            group=group,
        )


def window_geometry(
    ctx: VjpContext, node: onnx.NodeProto, x: str, y: str, kernel: list[int] | None
) -> WindowGeometry:
    """Static window geometry of a Conv / pooling node (explicit pads or ``auto_pad`` resolved)."""
    shape_x, shape_y = ctx.shape(x), ctx.shape(y)
    if shape_x is None or shape_y is None:
        raise ctx.need_static(node, "the rank of the input or output")
    spatial = len(shape_x) - 2
    sizes = ctx.static_dims(x, list(range(2, 2 + spatial)))
    outs = ctx.static_dims(y, list(range(2, 2 + spatial)))
    if sizes is None or outs is None:
        raise ctx.need_static(node, "the spatial size of its input or output")
    if kernel is None:
        kernel = [int(k) for k in get_attr(node, "kernel_shape", [])]
    if len(kernel) != spatial:
        raise ctx.need_static(node, "the kernel shape")
    strides = [int(v) for v in get_attr(node, "strides", [1] * spatial)]
    dilations = [int(v) for v in get_attr(node, "dilations", [1] * spatial)]
    auto_pad = get_attr(node, "auto_pad", "NOTSET")
    if auto_pad in ("NOTSET", ""):
        pads = [int(v) for v in get_attr(node, "pads", [0] * (2 * spatial))]
        begin, end = pads[:spatial], pads[spatial:]
    elif auto_pad == "VALID":
        begin, end = [0] * spatial, [0] * spatial
    elif auto_pad in ("SAME_UPPER", "SAME_LOWER"):
        begin, end = [], []
        for size, out, k, s, d in zip(sizes, outs, kernel, strides, dilations, strict=False):
            total = max((out - 1) * s + (k - 1) * d + 1 - size, 0)
            small, large = total // 2, total - total // 2
            begin.append(small if auto_pad == "SAME_UPPER" else large)
            end.append(large if auto_pad == "SAME_UPPER" else small)
    else:
        raise ctx.unsupported(node, f"auto_pad={auto_pad!r}")
    return WindowGeometry(sizes, outs, kernel, strides, dilations, begin, end)


def _kernel_from_weights(ctx: VjpContext, node: onnx.NodeProto) -> list[int] | None:
    shape_w = ctx.shape(node.input[1])
    if shape_w is None:
        return None
    dims = shape_w[2:]
    if not all(isinstance(d, int) for d in dims):
        return None
    return [int(d) for d in dims]  # type: ignore[arg-type]


@register("Conv")
def conv(ctx: VjpContext, node: onnx.NodeProto, grads: Grads, wrt: Wrt) -> list[str | None]:
    refuse_parameter_gradients(ctx, node, wrt, "weights or bias")
    g = output_grad(grads)
    x, w, y = node.input[0], node.input[1], node.output[0]
    geometry = window_geometry(
        ctx, node, x, y, get_attr(node, "kernel_shape") or _kernel_from_weights(ctx, node)
    )
    group = int(get_attr(node, "group", 1))
    flipped = _flipped_kernel(ctx, node, w, geometry, group)
    if flipped is not None:
        # Unit strides: the input gradient is a plain Conv with the flipped, channel-swapped
        # kernel, which onnxruntime runs much faster than ConvTranspose (blocked NCHWc kernels).
        reach = [(k - 1) * d for k, d in zip(geometry.kernel, geometry.dilations, strict=True)]
        pads = [r - pb for r, pb in zip(reach, geometry.pad_begin, strict=True)]
        pads += [r - pe for r, pe in zip(reach, geometry.pad_end, strict=True)]
        gx = ctx.op(
            "Conv",
            [g, flipped],
            kernel_shape=geometry.kernel,
            dilations=geometry.dilations,
            pads=pads,
            group=group,
        )
        return per_input(node, [gx])
    return per_input(node, [geometry.transpose(ctx, g, w, group)])


def _flipped_kernel(
    ctx: VjpContext, node: onnx.NodeProto, w: str, geometry: WindowGeometry, group: int
) -> str | None:
    """The kernel of the unit-stride input-gradient Conv, or None when that form does not apply.

    For weights ``W[m, c, k...]`` (``M`` outputs, ``C/group`` inputs per group) it is
    ``G[c, m, k...] = W[m, c, K-1-k...]`` within each group: built from ``W`` at run time, so
    overridden weights are honoured (onnxruntime folds it when ``W`` is a constant).
    """
    if any(s != 1 for s in geometry.strides):
        return None
    reach = [(k - 1) * d for k, d in zip(geometry.kernel, geometry.dilations, strict=True)]
    if any(pb > r or pe > r for pb, pe, r in zip(geometry.pad_begin, geometry.pad_end, reach, strict=True)):
        return None
    shape_w = ctx.shape(w)
    if shape_w is None or not all(isinstance(d, int) for d in shape_w[:2]):
        return None
    m, c_per_group = int(shape_w[0]), int(shape_w[1])  # type: ignore[arg-type]
    spatial = len(geometry.kernel)
    axes = list(range(2, 2 + spatial))
    flipped = ctx.op(
        "Slice",
        [
            w,
            ctx.ints([-1] * spatial),
            ctx.ints([-(2**63) + 1] * spatial),
            ctx.ints(axes),
            ctx.ints([-1] * spatial),
        ],
    )
    if group == 1:
        return ctx.op("Transpose", [flipped], perm=[1, 0, *axes])
    m_per_group = m // group
    if m_per_group == 1 and c_per_group == 1:
        return flipped  # depthwise: nothing to swap
    grouped = ctx.op("Reshape", [flipped, ctx.ints([group, m_per_group, c_per_group, *geometry.kernel])])
    swapped = ctx.op("Transpose", [grouped], perm=[0, 2, 1, *[a + 1 for a in axes]])
    return ctx.op("Reshape", [swapped, ctx.ints([group * c_per_group, m_per_group, *geometry.kernel])])


@register("ConvTranspose")
def conv_transpose(ctx: VjpContext, node: onnx.NodeProto, grads: Grads, wrt: Wrt) -> list[str | None]:
    # y[o] += x[i] w[k] at o = i*s + k*d - pad_begin: the input gradient is a Conv with pad_begin.
    refuse_parameter_gradients(ctx, node, wrt, "weights or bias")
    g = output_grad(grads)
    x, w, y = node.input[0], node.input[1], node.output[0]
    shape_x = ctx.shape(x)
    if shape_x is None:
        raise ctx.need_static(node, "the rank of its input")
    spatial = len(shape_x) - 2
    sizes = ctx.static_dims(x, list(range(2, 2 + spatial)))
    outs = ctx.static_dims(y, list(range(2, 2 + spatial)))
    kernel = get_attr(node, "kernel_shape") or _kernel_from_weights(ctx, node)
    if sizes is None or outs is None or kernel is None:
        raise ctx.need_static(node, "the spatial size of its input, output or kernel")
    strides = [int(v) for v in get_attr(node, "strides", [1] * spatial)]
    dilations = [int(v) for v in get_attr(node, "dilations", [1] * spatial)]
    output_padding = [int(v) for v in get_attr(node, "output_padding", [0] * spatial)]
    auto_pad = get_attr(node, "auto_pad", "NOTSET")
    explicit = get_attr(node, "pads")
    begin: list[int] = []
    for axis, (size, out, k, s, d, op) in enumerate(
        zip(sizes, outs, kernel, strides, dilations, output_padding, strict=False)
    ):
        # An output larger than the natural size is not cropped (onnxruntime clamps at 0).
        total = max(s * (size - 1) + op + (k - 1) * d + 1 - out, 0)
        if auto_pad in ("NOTSET", "") and get_attr(node, "output_shape") is None:
            begin.append(int(explicit[axis]) if explicit is not None else 0)
        elif auto_pad == "VALID":
            begin.append(0)
        elif auto_pad == "SAME_LOWER":
            begin.append(total - total // 2)
        else:
            # SAME_UPPER, and an output_shape without auto_pad (onnxruntime pads like SAME_UPPER).
            begin.append(total // 2)
    pads_end = [
        max((size - 1) * s + (k - 1) * d + 1 - out - pb, 0)
        for size, out, k, s, d, pb in zip(sizes, outs, kernel, strides, dilations, begin, strict=False)
    ]
    gx = ctx.op(
        "Conv",
        [g, w],
        kernel_shape=[int(k) for k in kernel],
        strides=strides,
        dilations=dilations,
        pads=begin + pads_end,
        group=int(get_attr(node, "group", 1)),
    )
    return per_input(node, [gx])
