"""VJP rules of data-movement ops: reshapes, transposes, concatenation, slicing, padding, gathers.

Also TopK (scatter of the values' gradient to their indices) and CumSum (a reversed CumSum).

Slice gradients with unit steps are a ``Pad`` of the output gradient: with amounts fixed at build
time when the slice parameters and sliced dims are static, else computed at run time from the
input's shape and the starts/ends (legacy torch exports slice ``chunk``/``split`` pieces with
starts computed from ``Shape``). Other steps use a run-time index map (``Range`` over the flattened
input, sliced like the data, then ``ScatterElements``), which moves every element through an index.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import onnx

from models.gradient_graph.context import VjpContext, get_attr
from models.gradient_graph.rules.common import Grads, Wrt, output_grad, per_input
from models.gradient_graph.rules.registry import register

_INT64_MAX = int(np.iinfo(np.int64).max)


@register("Reshape", "Flatten", "Squeeze", "Unsqueeze")
def reshape_like(ctx: VjpContext, node: onnx.NodeProto, grads: Grads, wrt: Wrt) -> list[str | None]:
    x = node.input[0]
    return per_input(node, [ctx.op("Reshape", [output_grad(grads), ctx.shape_of(x)])])


@register("Transpose")
def transpose(ctx: VjpContext, node: onnx.NodeProto, grads: Grads, wrt: Wrt) -> list[str | None]:
    perm = get_attr(node, "perm")
    if perm is None:
        perm = list(reversed(range(ctx.require_rank(node, node.input[0]))))
    inverse = [0] * len(perm)
    for i, p in enumerate(perm):
        inverse[int(p)] = i
    return [ctx.op("Transpose", [output_grad(grads)], perm=inverse)]


def _axis(ctx: VjpContext, node: onnx.NodeProto, axis: int, tensor: str) -> int:
    if axis >= 0:
        return axis
    return axis + ctx.require_rank(node, tensor)


@register("Concat")
def concat(ctx: VjpContext, node: onnx.NodeProto, grads: Grads, wrt: Wrt) -> list[str | None]:
    g = output_grad(grads)
    axis = _axis(ctx, node, int(get_attr(node, "axis", 0)), node.output[0])
    names = list(node.input)
    sizes = [ctx.static_dims(x, [axis]) for x in names]
    if all(s is not None for s in sizes):
        static = [s[0] for s in sizes if s is not None]
        offsets = np.concatenate([[0], np.cumsum(static)]).astype(int).tolist()
        if sum(wrt) == 1:
            # One input needs a gradient: slice it out instead of splitting everything.
            i = list(wrt).index(True)
            piece = ctx.op("Slice", [g, ctx.ints([offsets[i]]), ctx.ints([offsets[i + 1]]), ctx.ints([axis])])
            return [piece if j == i else None for j in range(len(names))]
        pieces = ctx.split(g, axis, static, len(names))
    else:
        lengths = [ctx.op("Slice", [ctx.shape_of(x), ctx.ints([axis]), ctx.ints([axis + 1])]) for x in names]
        pieces = ctx.split(g, axis, ctx.op("Concat", lengths, axis=0), len(names))
    return [p if w else None for p, w in zip(pieces, wrt, strict=False)]


@register("Split")
def split(ctx: VjpContext, node: onnx.NodeProto, grads: Grads, wrt: Wrt) -> list[str | None]:
    axis = int(get_attr(node, "axis", 0))
    parts = [
        grad if grad is not None else ctx.zeros_like(out)
        for grad, out in zip(grads, node.output, strict=False)
    ]
    return per_input(node, [ctx.op("Concat", parts, axis=axis)])


@register("Expand")
def expand(ctx: VjpContext, node: onnx.NodeProto, grads: Grads, wrt: Wrt) -> list[str | None]:
    x = node.input[0]
    return [ctx.reduce_to_shape(output_grad(grads), x, ctx.shape(node.output[0])), None]


@register("Tile")
def tile(ctx: VjpContext, node: onnx.NodeProto, grads: Grads, wrt: Wrt) -> list[str | None]:
    # Split each tiled axis of length r*d into (r, d) and sum over r.
    x = node.input[0]
    repeats = ctx.const_ints(node.input[1])
    if repeats is None:
        raise ctx.unsupported(node, "the repeats input is not a constant")
    shape_x = ctx.shape_of(x)
    pieces: list[str] = []
    summed: list[int] = []
    for axis, r in enumerate(repeats):
        if r != 1:
            pieces.append(ctx.ints([r]))
            summed.append(len(pieces) - 1)
        pieces.append(ctx.op("Slice", [shape_x, ctx.ints([axis]), ctx.ints([axis + 1])]))
    if not summed:
        return [output_grad(grads), None]
    split_shape = ctx.op("Concat", pieces, axis=0)
    grouped = ctx.op("Reshape", [output_grad(grads), split_shape])
    return [ctx.reduce_sum(grouped, summed, keepdims=False), None]


def _slice_params(
    ctx: VjpContext, node: onnx.NodeProto
) -> tuple[list[int], list[int], list[int], list[int]] | None:
    """Constant (starts, ends, axes, steps) of a Slice, or None if any is dynamic."""
    if ctx.opset < 10:
        starts = [int(v) for v in get_attr(node, "starts", [])]
        ends = [int(v) for v in get_attr(node, "ends", [])]
        axes_attr = get_attr(node, "axes")
        axes = list(range(len(starts))) if axes_attr is None else [int(v) for v in axes_attr]
        return starts, ends, axes, [1] * len(starts)
    inputs = list(node.input) + [""] * (5 - len(node.input))
    starts_v, ends_v = ctx.const_ints(inputs[1]), ctx.const_ints(inputs[2])
    if starts_v is None or ends_v is None:
        return None
    axes_v = ctx.const_ints(inputs[3]) if inputs[3] else list(range(len(starts_v)))
    steps_v = ctx.const_ints(inputs[4]) if inputs[4] else [1] * len(starts_v)
    if axes_v is None or steps_v is None:
        return None
    return starts_v, ends_v, axes_v, steps_v


@register("Slice")
def slice_(ctx: VjpContext, node: onnx.NodeProto, grads: Grads, wrt: Wrt) -> list[str | None]:
    g, x = output_grad(grads), node.input[0]
    params = _slice_params(ctx, node)
    rank = ctx.rank(x)
    if params is not None and rank is not None:
        starts, ends, axes, steps = params
        if all(s == 1 for s in steps):
            pads = [0] * (2 * rank)
            static = True
            for start, end, axis in zip(starts, ends, axes, strict=False):
                axis = axis + rank if axis < 0 else axis
                dims = ctx.static_dims(x, [axis])
                if dims is None:
                    static = False
                    break
                begin, stop, _ = slice(start, end, 1).indices(dims[0])
                if stop <= begin:
                    return per_input(node, [None])  # an empty slice: zero gradient
                pads[axis] = begin
                pads[axis + rank] = dims[0] - stop
            if static:
                if not any(pads):
                    return per_input(node, [g])
                return per_input(node, [ctx.op("Pad", [g, ctx.ints(pads)], mode="constant")])
    pads_at_run_time = _unit_step_pads(ctx, node, x)
    if pads_at_run_time is not None:
        return per_input(node, [ctx.op("Pad", [g, pads_at_run_time], mode="constant")])
    return per_input(node, [_scatter_through(ctx, node, g, x)])


def _unit_step_pads(ctx: VjpContext, node: onnx.NodeProto, x: str) -> str | None:
    """The ``Pad`` amounts ([2·rank] int64, computed at run time) that undo a unit-step Slice of ``x``.

    For each sliced axis of size d, a start or end s counts from the end when negative and is
    clamped to [0, d]; the slice keeps [begin, max(end, begin)), so the gradient is padded by
    ``begin`` before and ``d − max(end, begin)`` after. ``None`` when the axes or steps are not
    constants, a step is not 1, the rank is unknown or the opset predates dynamic pads.
    """
    rank = ctx.rank(x)
    if ctx.opset < 11 or rank is None:
        return None
    inputs = list(node.input) + [""] * (5 - len(node.input))
    if inputs[3]:
        axes = ctx.const_ints(inputs[3])
    else:
        starts_shape = ctx.shape(inputs[1])
        axes = list(range(starts_shape[0])) if starts_shape and isinstance(starts_shape[0], int) else None
    steps = ctx.const_ints(inputs[4]) if inputs[4] else [1] * len(axes or [])
    if axes is None or steps is None or any(step != 1 for step in steps):
        return None
    axes = [axis + rank if axis < 0 else axis for axis in axes]
    int64 = onnx.TensorProto.INT64
    dims = ctx.op("Gather", [ctx.shape_of(x), ctx.ints(axes)])
    zero = ctx.ints([0])

    def clamped(index: str) -> str:
        index = ctx.op("Cast", [index], to=int64)
        from_end = ctx.op("Where", [ctx.op("Less", [index, zero]), ctx.op("Add", [index, dims]), index])
        return ctx.op("Min", [ctx.op("Max", [from_end, zero]), dims])

    begin = clamped(inputs[1])
    stop = ctx.op("Max", [clamped(inputs[2]), begin])
    amounts = ctx.op("Concat", [begin, ctx.op("Sub", [dims, stop])], axis=0)
    positions = ctx.ints([*axes, *(axis + rank for axis in axes)])
    return ctx.op("ScatterElements", [ctx.ints([0] * (2 * rank)), positions, amounts], axis=0)


def _scatter_through(
    ctx: VjpContext,
    node: onnx.NodeProto,
    g: str,
    x: str,
    extra_inputs: Sequence[str] | None = None,
    add: bool = False,
) -> str:
    """Gradient of an index-moving op: apply the op to the flat indices of x, then scatter g there.

    ``extra_inputs`` replace the node's inputs after the data (default: the node's own); ``add``
    sums the gradient of elements the op copies more than once (reflect/edge padding).
    """
    if ctx.opset < 11:
        raise ctx.unsupported(node, f"dynamic slicing needs opset >= 11, the model has {ctx.opset}")
    shape_x = ctx.shape_of(x)
    count = ctx.size_of(x)
    flat_index = ctx.op(
        "Range", [ctx.const(np.asarray(0, dtype=np.int64)), count, ctx.const(np.asarray(1, dtype=np.int64))]
    )
    index = ctx.op("Reshape", [flat_index, shape_x])
    rest = list(node.input[1:]) if extra_inputs is None else list(extra_inputs)
    selected = ctx.op(
        node.op_type, [index, *rest], **{a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
    )
    flat = ctx.ints([-1])
    zeros = ctx.zeros(ctx.op("Reshape", [count, ctx.ints([1])]), x)
    flat_selected = ctx.op("Reshape", [selected, flat])
    flat_g = ctx.op("Reshape", [g, flat])
    if add:
        scattered = ctx.scatter_add(node, zeros, flat_selected, flat_g, 0)
    else:
        scattered = ctx.op("ScatterElements", [zeros, flat_selected, flat_g], axis=0)
    return ctx.op("Reshape", [scattered, shape_x])


@register("Pad")
def pad(ctx: VjpContext, node: onnx.NodeProto, grads: Grads, wrt: Wrt) -> list[str | None]:
    g, x = output_grad(grads), node.input[0]
    mode = get_attr(node, "mode", "constant")
    if len(wrt) > 2 and wrt[2]:
        raise ctx.unsupported(node, "the padding value depends on the differentiated input")
    if mode != "constant":
        # reflect / edge / wrap copy input elements into the border: pad an index map the same
        # way and sum the gradient back onto the elements it names.
        if ctx.opset < 11:
            raise ctx.unsupported(node, f"mode={mode!r} before opset 11")
        rest = (
            [node.input[1], "", node.input[3]] if len(node.input) > 3 and node.input[3] else [node.input[1]]
        )
        return per_input(node, [_scatter_through(ctx, node, g, x, rest, add=True)])
    rank = ctx.require_rank(node, x)
    if ctx.opset < 11:
        pads = [int(v) for v in get_attr(node, "pads", [])]
        axes = list(range(rank))
    else:
        pads_v = ctx.const_ints(node.input[1])
        if pads_v is None:
            raise ctx.unsupported(node, "the pads input is not a constant")
        pads = pads_v
        axes_v = ctx.const_ints(node.input[3]) if len(node.input) > 3 and node.input[3] else list(range(rank))
        if axes_v is None:
            raise ctx.unsupported(node, "the axes input is not a constant")
        axes = [a + rank if a < 0 else a for a in axes_v]
    n = len(axes)
    begins, ends = pads[:n], pads[n:]
    out = g
    # Positive pads added elements: slice them off. Negative pads cropped: pad zeros back.
    crop_axes = [a for a, b, e in zip(axes, begins, ends, strict=False) if b > 0 or e > 0]
    if crop_axes:
        starts = [max(b, 0) for a, b, e in zip(axes, begins, ends, strict=False) if b > 0 or e > 0]
        stops = [
            -e if e > 0 else _INT64_MAX for a, b, e in zip(axes, begins, ends, strict=False) if b > 0 or e > 0
        ]
        out = ctx.op("Slice", [out, ctx.ints(starts), ctx.ints(stops), ctx.ints(crop_axes)])
    if any(b < 0 or e < 0 for b, e in zip(begins, ends, strict=False)):
        back = [0] * (2 * rank)
        for a, b, e in zip(axes, begins, ends, strict=False):
            back[a] = max(-b, 0)
            back[a + rank] = max(-e, 0)
        out = ctx.op("Pad", [out, ctx.ints(back)], mode="constant")
    return per_input(node, [out])


@register("Gather")
def gather(ctx: VjpContext, node: onnx.NodeProto, grads: Grads, wrt: Wrt) -> list[str | None]:
    g, data, indices = output_grad(grads), node.input[0], node.input[1]
    axis = int(get_attr(node, "axis", 0))
    shape_d = ctx.shape_of(data)
    if axis == 0:
        # g has shape indices.shape + data.shape[1:]: exactly ScatterND's updates.
        if ctx.opset < 16:
            raise ctx.unsupported(node, "its gradient needs ScatterND with reduction='add' (opset 16)")
        index = _normalised_indices(ctx, indices, shape_d, 0)
        idx = ctx.unsqueeze(index, [-1])
        return [ctx.op("ScatterND", [ctx.zeros_like(data), idx, g], reduction="add"), None]
    rank = ctx.require_rank(node, data)
    axis = axis + rank if axis < 0 else axis
    index = _normalised_indices(ctx, indices, shape_d, axis)
    zeros = ctx.zeros_like(data)
    pieces = []
    if axis > 0:
        pieces.append(ctx.op("Slice", [shape_d, ctx.ints([0]), ctx.ints([axis])]))
    pieces.append(ctx.ints([-1]))
    if axis < rank - 1:
        pieces.append(ctx.op("Slice", [shape_d, ctx.ints([axis + 1]), ctx.ints([_INT64_MAX])]))
    g_flat = ctx.op("Reshape", [g, ctx.op("Concat", pieces, axis=0)])
    idx_shape = [1] * axis + [-1] + [1] * (rank - axis - 1)
    idx = ctx.op("Expand", [ctx.op("Reshape", [index, ctx.ints(idx_shape)]), ctx.op("Shape", [g_flat])])
    return [ctx.scatter_add(node, zeros, idx, g_flat, axis), None]


def _normalised_indices(ctx: VjpContext, indices: str, shape_d: str, axis: int) -> str:
    known = ctx.const_value(indices)
    if known is not None and np.all(np.asarray(known) >= 0):
        return (
            indices
            if ctx.dtype(indices) == onnx.TensorProto.INT64
            else ctx.op("Cast", [indices], to=onnx.TensorProto.INT64)
        )
    idx = (
        indices
        if ctx.dtype(indices) == onnx.TensorProto.INT64
        else ctx.op("Cast", [indices], to=onnx.TensorProto.INT64)
    )
    dim = ctx.op("Slice", [shape_d, ctx.ints([axis]), ctx.ints([axis + 1])])
    dim = ctx.op("Squeeze", [dim]) if ctx.opset < 13 else ctx.op("Squeeze", [dim, ctx.ints([0])])
    negative = ctx.op("Less", [idx, ctx.const(np.asarray(0, dtype=np.int64))])
    return ctx.op("Where", [negative, ctx.op("Add", [idx, dim]), idx])


@register("GatherElements")
def gather_elements(ctx: VjpContext, node: onnx.NodeProto, grads: Grads, wrt: Wrt) -> list[str | None]:
    g, data, indices = output_grad(grads), node.input[0], node.input[1]
    rank = ctx.require_rank(node, data)
    axis = int(get_attr(node, "axis", 0))
    axis = axis + rank if axis < 0 else axis
    index = _normalised_indices(ctx, indices, ctx.shape_of(data), axis)
    return [ctx.scatter_add(node, ctx.zeros_like(data), index, g, axis), None]


@register("GatherND")
def gather_nd(ctx: VjpContext, node: onnx.NodeProto, grads: Grads, wrt: Wrt) -> list[str | None]:
    if int(get_attr(node, "batch_dims", 0)) != 0:
        raise ctx.unsupported(node, "batch_dims != 0")
    if ctx.opset < 16:
        raise ctx.unsupported(node, "its gradient needs ScatterND with reduction='add' (opset 16)")
    g, data, indices = output_grad(grads), node.input[0], node.input[1]
    return [ctx.op("ScatterND", [ctx.zeros_like(data), indices, g], reduction="add"), None]


@register("DepthToSpace", "SpaceToDepth")
def depth_space(ctx: VjpContext, node: onnx.NodeProto, grads: Grads, wrt: Wrt) -> list[str | None]:
    block = int(get_attr(node, "blocksize"))
    if node.op_type == "SpaceToDepth":
        return [ctx.op("DepthToSpace", [output_grad(grads)], blocksize=block, mode="DCR")]
    mode = get_attr(node, "mode", "DCR")
    if mode != "DCR":
        raise ctx.unsupported(node, f"mode={mode!r} (only DCR is the inverse of SpaceToDepth)")
    return [ctx.op("SpaceToDepth", [output_grad(grads)], blocksize=block)]


@register("TopK")
def top_k(ctx: VjpContext, node: onnx.NodeProto, grads: Grads, wrt: Wrt) -> list[str | None]:
    g = grads[0]
    if g is None:  # only the indices are used downstream
        return [None, None]
    x = node.input[0]
    rank = ctx.require_rank(node, x)
    axis = int(get_attr(node, "axis", -1))
    axis = axis + rank if axis < 0 else axis
    indices = ctx.request_output(node, 1, onnx.TensorProto.INT64, ctx.shape(node.output[0]))
    # TopK picks distinct positions: a plain scatter needs no reduction.
    return [ctx.op("ScatterElements", [ctx.zeros_like(x), indices, g], axis=axis), None]


@register("CumSum")
def cum_sum(ctx: VjpContext, node: onnx.NodeProto, grads: Grads, wrt: Wrt) -> list[str | None]:
    # y_j = sum_{i <= j} x_i, so gx_i = sum_{j >= i} g_j: the same scan run the other way.
    reverse = int(get_attr(node, "reverse", 0))
    exclusive = int(get_attr(node, "exclusive", 0))
    return [
        ctx.op("CumSum", [output_grad(grads), node.input[1]], exclusive=exclusive, reverse=1 - reverse),
        None,
    ]
