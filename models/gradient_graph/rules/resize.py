"""VJP rule of Resize (nearest, linear, cubic; every coordinate transformation but tf_crop_and_resize).

Resize is linear in its input and separable per axis, so along each resized axis it is a
constant matrix ``M`` (``n_in x n_out``). The builder obtains ``M`` by resizing an identity
matrix with ONNX's reference implementation (``onnx.reference``) using the node's own attributes,
so every mode follows the specification; the gradient multiplies ``g`` by ``M^T`` per axis.
Integer nearest-neighbour upsampling (each input repeated ``k`` times) becomes a cheaper
reshape-and-sum. Needs the static sizes of the resized axes (scales or sizes may be computed at
run time, e.g. from ``Shape``, as long as shape inference resolves the output size).
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper
from onnx.reference import ReferenceEvaluator

from models.gradient_graph.context import VjpContext, get_attr
from models.gradient_graph.rules.common import Grads, Wrt, output_grad, per_input
from models.gradient_graph.rules.registry import register

_COPIED_ATTRIBUTES = (
    "mode",
    "coordinate_transformation_mode",
    "cubic_coeff_a",
    "exclude_outside",
    "nearest_mode",
    "antialias",
    "extrapolation_value",
)


def _per_axis_matrix(
    node: onnx.NodeProto, opset: int, n_in: int, n_out: int, scale: float | None
) -> np.ndarray:
    """``M[i, o]``: the weight of input ``i`` in output ``o`` when resizing one axis."""
    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute if a.name in _COPIED_ATTRIBUTES}
    inputs = ["X", ""]
    initializers = []
    if scale is not None:
        initializers.append(helper.make_tensor("scales", onnx.TensorProto.FLOAT, [2], [1.0, scale]))
        inputs.append("scales")
    else:
        initializers.append(helper.make_tensor("sizes", onnx.TensorProto.INT64, [2], [n_in, n_out]))
        inputs += ["", "sizes"]
    graph = helper.make_graph(
        [helper.make_node("Resize", inputs, ["Y"], **attrs)],
        "resize_axis",
        [helper.make_tensor_value_info("X", onnx.TensorProto.DOUBLE, [n_in, n_in])],
        [helper.make_tensor_value_info("Y", onnx.TensorProto.DOUBLE, [n_in, n_out])],
        initializer=initializers,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    (out,) = ReferenceEvaluator(model).run(None, {"X": np.eye(n_in, dtype=np.float64)})
    matrix = np.asarray(out, dtype=np.float64)
    if matrix.shape != (n_in, n_out):
        raise ValueError(f"reference Resize returned shape {matrix.shape}, expected {(n_in, n_out)}")
    return matrix


def _repeat_factor(matrix: np.ndarray) -> int | None:
    n_in, n_out = matrix.shape
    if n_out % n_in:
        return None
    k = n_out // n_in
    return k if np.array_equal(matrix, np.kron(np.eye(n_in), np.ones((1, k)))) else None


@register("Resize", "Upsample")
def resize(ctx: VjpContext, node: onnx.NodeProto, grads: Grads, wrt: Wrt) -> list[str | None]:
    g = output_grad(grads)
    x, y = node.input[0], node.output[0]
    if node.op_type == "Upsample" or ctx.opset < 11:
        raise ctx.unsupported(
            node, f"{node.op_type} before opset 11", "Re-export the model with opset 11 or later"
        )
    transform = get_attr(node, "coordinate_transformation_mode", "half_pixel")
    if transform in ("tf_crop_and_resize", "tf_half_pixel_for_nn"):
        raise ctx.unsupported(node, f"coordinate_transformation_mode={transform!r}")
    if get_attr(node, "keep_aspect_ratio_policy", "stretch") != "stretch":
        raise ctx.unsupported(node, "keep_aspect_ratio_policy other than 'stretch'")
    rank = ctx.require_rank(node, x)
    axes_attr = get_attr(node, "axes")
    axes = (
        list(range(rank))
        if axes_attr is None
        else [int(a) + rank if int(a) < 0 else int(a) for a in axes_attr]
    )
    scales = ctx.const_value(node.input[2]) if len(node.input) > 2 and node.input[2] else None
    use_scales = scales is not None and np.asarray(scales).size > 0
    resized = []
    for i, axis in enumerate(axes):
        scale = float(np.asarray(scales).reshape(-1)[i]) if use_scales else None
        size_in, size_out = ctx.static_dims(x, [axis]), ctx.static_dims(y, [axis])
        dim_in, dim_out = _dim(ctx, x, axis), _dim(ctx, y, axis)
        if scale == 1.0 or (scale is None and dim_in is not None and dim_in == dim_out):
            continue
        if size_in is None or size_out is None:
            raise ctx.need_static(node, f"the size of resized axis {axis}")
        resized.append((axis, size_in[0], size_out[0], scale))
    if not resized:
        return per_input(node, [g])
    out = g
    for axis, n_in, n_out, scale in resized:
        matrix = _per_axis_matrix(node, ctx.opset, n_in, n_out, scale)
        out = _apply_adjoint(ctx, out, x, axis, rank, matrix)
    return per_input(node, [out])


def _dim(ctx: VjpContext, name: str, axis: int) -> object:
    shape = ctx.shape(name)
    return None if shape is None else shape[axis]


def _apply_adjoint(ctx: VjpContext, g: str, x: str, axis: int, rank: int, matrix: np.ndarray) -> str:
    """``g`` contracted with ``M`` along ``axis`` (``n_out`` -> ``n_in``)."""
    k = _repeat_factor(matrix)
    if k is not None:
        # Nearest upsampling by an integer factor: sum each run of k outputs.
        n_in = matrix.shape[0]
        shape_g = ctx.op("Shape", [g])
        pieces = [
            ctx.op("Slice", [shape_g, ctx.ints([0]), ctx.ints([axis])]) if axis > 0 else None,
            ctx.ints([n_in, k]),
            ctx.op("Slice", [shape_g, ctx.ints([axis + 1]), ctx.ints([rank])]) if axis < rank - 1 else None,
        ]
        grouped = ctx.op("Reshape", [g, ctx.op("Concat", [p for p in pieces if p is not None], axis=0)])
        return ctx.reduce_sum(grouped, [axis + 1], keepdims=False)
    if axis == rank - 1:
        return ctx.op("MatMul", [g, ctx.full_const(matrix.T, x)])
    if axis == rank - 2:
        return ctx.op("MatMul", [ctx.full_const(matrix, x), g])
    perm = [a for a in range(rank) if a != axis] + [axis]
    moved = ctx.op("Transpose", [g], perm=perm)
    product = ctx.op("MatMul", [moved, ctx.full_const(matrix.T, x)])
    inverse = [0] * rank
    for i, p in enumerate(perm):
        inverse[p] = i
    return ctx.op("Transpose", [product], perm=inverse)
