"""VJP rules of reshapes, slicing, padding, gathers, reductions and Resize against finite differences.

All float64 except Resize (onnxruntime has no double Resize kernel: float32, linear in its input,
wide step).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from onnx import helper, numpy_helper

from tests.test_models import vjp_harness as h

X = h.randn(2, 3, 4, seed=3)


def ints(*values: int) -> np.ndarray:
    return np.array(values, dtype=np.int64)


def _model(
    nodes: list[Any],
    inputs: dict[str, list[Any]],
    initializers: dict[str, np.ndarray],
    opset: int = 17,
    dtype: int = h.F64,
) -> Any:
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info(n, dtype, s) for n, s in inputs.items()],
        [helper.make_tensor_value_info("y", dtype, None)],
        initializer=[numpy_helper.from_array(np.asarray(v), k) for k, v in initializers.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 10
    return model


RESHAPES: list[tuple[str, str, dict[str, Any], dict[str, np.ndarray], int]] = [
    ("reshape", "Reshape", {}, {"s": ints(0, -1)}, 17),
    ("flatten", "Flatten", {"axis": 2}, {}, 17),
    ("unsqueeze-13", "Unsqueeze", {}, {"a": ints(1, -1)}, 13),
    ("unsqueeze-11", "Unsqueeze", {"axes": [1, 4]}, {}, 11),
    ("transpose", "Transpose", {"perm": [0, 2, 1]}, {}, 17),
    ("transpose-default", "Transpose", {}, {}, 17),
    ("expand", "Expand", {}, {"s": ints(2, 1, 3, 4)}, 17),
    ("tile", "Tile", {}, {"r": ints(1, 2, 3)}, 17),
    ("identity", "Identity", {}, {}, 17),
]


@pytest.mark.parametrize(
    ("op", "attrs", "inits", "opset"), [r[1:] for r in RESHAPES], ids=[r[0] for r in RESHAPES]
)
def test_reshape_like(op: str, attrs: dict[str, Any], inits: dict[str, np.ndarray], opset: int) -> None:
    model = h.one_op_model(op, {"x": ["N", 3, 4]}, attrs=attrs, initializers=inits, opset=opset)
    h.check_vjp(model, {"x": X})


def test_squeeze() -> None:
    model = h.one_op_model("Squeeze", {"x": ["N", 3, 1, 4]}, initializers={"a": ints(2)})
    h.check_vjp(model, {"x": h.randn(2, 3, 1, 4)})


@pytest.mark.parametrize("axis", [1, -1])
def test_concat_of_input_pieces(axis: int) -> None:
    # c is a batched graph input that is not differentiated.
    nodes = [
        helper.make_node("Relu", ["x"], ["r"]),
        helper.make_node("Concat", ["x", "c", "r"], ["y"], axis=axis),
    ]
    c_shape = (3, 2) if axis == -1 else (5, 4)
    model = _model(nodes, {"x": ["N", 3, 4], "c": ["N", *c_shape]}, {})
    h.check_vjp(model, {"x": X, "c": h.randn(2, *c_shape, seed=4)}, ["x"])


def test_concat_with_one_differentiated_input_slices_it_out() -> None:
    model = h.one_op_model("Concat", {"c": ["N", 3, 2], "x": ["N", 3, 4]}, attrs={"axis": 2})
    gradient_model = h.build_gradient_model(model, ["x"])
    assert not any(n.op_type == "Split" for n in gradient_model.graph.node)
    h.check_vjp(model, {"c": h.randn(2, 3, 2, seed=4), "x": X}, ["x"])


@pytest.mark.parametrize("opset", [13, 18])
def test_split_with_an_unused_output(opset: int) -> None:
    split_attrs: dict[str, Any] = {"axis": 2, "num_outputs": 3} if opset >= 18 else {"axis": 2}
    inputs = ["x"] if opset >= 18 else ["x", "sizes"]
    nodes = [
        helper.make_node("Split", inputs, ["a", "b", "c"], **split_attrs),
        helper.make_node("Mul", ["a", "c"], ["y"]),
    ]
    inits = {} if opset >= 18 else {"sizes": ints(2, 1, 2)}
    shape = (2, 3, 6) if opset >= 18 else (2, 3, 5)
    model = _model(nodes, {"x": ["N", 3, shape[2]]}, inits, opset=opset)
    h.check_vjp(model, {"x": h.randn(*shape)})


SLICES: list[tuple[str, tuple[int, ...], tuple[int, ...], tuple[int, ...] | None, tuple[int, ...] | None]] = [
    ("unit-step", (1, 0), (3, 3), (1, 2), None),
    ("negative-indices", (-2,), (100,), (-1,), None),
    ("step2", (0,), (4,), (2,), (2,)),
    ("negative-step", (3, -1), (0, -100), (2, 1), (-1, -2)),
    ("empty", (2,), (2,), (1,), None),
]


@pytest.mark.parametrize(
    ("starts", "ends", "axes", "steps"), [s[1:] for s in SLICES], ids=[s[0] for s in SLICES]
)
def test_slice(
    starts: tuple[int, ...],
    ends: tuple[int, ...],
    axes: tuple[int, ...] | None,
    steps: tuple[int, ...] | None,
) -> None:
    inits = {"s": ints(*starts), "e": ints(*ends)}
    order = ["x", "s", "e"]
    if axes is not None:
        inits["a"] = ints(*axes)
        order.append("a")
    if steps is not None:
        inits["t"] = ints(*steps)
        order.append("t")
    model = _model([helper.make_node("Slice", order, ["y"])], {"x": ["N", 3, 4]}, inits)
    if starts == (2,):
        # An empty slice: the explained tensor is empty and the gradient is zero.
        run = h.session(h.build_gradient_model(model))
        grad = run.run(["mollify_gradient__x"], {"x": X, "mollify_cotangent__y": np.zeros((2, 0, 4))})[0]
        np.testing.assert_array_equal(grad, np.zeros_like(X))
        return
    h.check_vjp(model, {"x": X})


def test_slice_with_starts_computed_at_run_time() -> None:
    # starts = Shape(x)[2] - 3: not a constant, so the scatter-based rule is used.
    nodes = [
        helper.make_node("Shape", ["x"], ["shape"]),
        helper.make_node("Gather", ["shape", "two"], ["len"]),
        helper.make_node("Sub", ["len", "three"], ["start"]),
        helper.make_node("Slice", ["x", "start", "big", "axis"], ["y"]),
    ]
    inits = {"two": ints(2), "three": ints(3), "big": ints(1000), "axis": ints(2)}
    model = _model(nodes, {"x": ["N", 3, "W"]}, inits)
    h.check_vjp(model, {"x": h.randn(2, 3, 5)})


@pytest.mark.parametrize("pads", [(0, 1, 2, 0, 2, 1), (0, -1, 1, 0, 1, -2)], ids=["positive", "mixed-crop"])
def test_pad(pads: tuple[int, ...]) -> None:
    model = h.one_op_model(
        "Pad",
        {"x": ["N", 3, 4]},
        initializers={"p": ints(*pads), "v": np.array(0.5)},
        attrs={"mode": "constant"},
    )
    h.check_vjp(model, {"x": X})


@pytest.mark.parametrize("mode", ["reflect", "edge", "wrap"])
def test_pad_copying_modes(mode: str) -> None:
    model = h.one_op_model(
        "Pad", {"x": ["N", 3, 4]}, initializers={"p": ints(0, 2, 1, 0, 1, 3)}, attrs={"mode": mode}, opset=19
    )
    h.check_vjp(model, {"x": X})


def test_pad_with_axes_opset_18() -> None:
    model = h.one_op_model(
        "Pad",
        {"x": ["N", 3, 4]},
        initializers={"p": ints(1, 2, 0, 3), "v": np.array(0.0), "a": ints(1, -1)},
        opset=18,
    )
    h.check_vjp(model, {"x": X})


@pytest.mark.parametrize(
    ("axis", "indices"), [(0, [[1, 0], [1, 1]]), (1, [2, -1, 0]), (2, 3), (-1, [[0, 0], [3, 1]])]
)
def test_gather(axis: int, indices: Any) -> None:
    model = h.one_op_model(
        "Gather",
        {"x": ["N", 3, 4]},
        attrs={"axis": axis},
        initializers={"i": np.array(indices, dtype=np.int64)},
    )
    x = h.randn(3, 3, 4) if axis == 0 else X
    h.check_vjp(model, {"x": x})


def test_gather_elements_with_repeated_indices() -> None:
    idx = np.array([[[0, 1, 1, 0]] * 2] * 2, dtype=np.int64)
    model = h.one_op_model("GatherElements", {"x": ["N", 3, 4]}, attrs={"axis": 1}, initializers={"i": idx})
    h.check_vjp(model, {"x": X})


def test_gather_nd() -> None:
    idx = np.array([[0, 1], [1, 2], [0, 1]], dtype=np.int64)
    model = h.one_op_model("GatherND", {"x": ["N", 3, 4]}, initializers={"i": idx})
    h.check_vjp(model, {"x": X})


def test_depth_to_space_and_back() -> None:
    nodes = [
        helper.make_node("DepthToSpace", ["x"], ["d"], blocksize=2),
        helper.make_node("Tanh", ["d"], ["t"]),
        helper.make_node("SpaceToDepth", ["t"], ["y"], blocksize=2),
    ]
    model = _model(nodes, {"x": ["N", 8, 2, 3]}, {})
    h.check_vjp(model, {"x": h.randn(2, 8, 2, 3)})


REDUCE_OPS = [
    "ReduceSum",
    "ReduceMean",
    "ReduceMax",
    "ReduceMin",
    "ReduceSumSquare",
    "ReduceL1",
    "ReduceL2",
    "ReduceLogSumExp",
]


@pytest.mark.parametrize("keepdims", [0, 1])
@pytest.mark.parametrize("op", REDUCE_OPS)
def test_reductions_axes_as_input(op: str, keepdims: int) -> None:
    model = h.one_op_model(
        op, {"x": ["N", 3, 4]}, attrs={"keepdims": keepdims}, initializers={"a": ints(1, -1)}, opset=18
    )
    h.check_vjp(model, {"x": X})


@pytest.mark.parametrize("keepdims", [0, 1])
@pytest.mark.parametrize("op", ["ReduceSum", "ReduceMean", "ReduceMax"])
def test_reductions_axes_as_attribute_opset_11(op: str, keepdims: int) -> None:
    model = h.one_op_model(op, {"x": ["N", 3, 4]}, attrs={"keepdims": keepdims, "axes": [-1]}, opset=11)
    h.check_vjp(model, {"x": X})


def test_reduce_over_all_axes_by_default() -> None:
    model = h.one_op_model("ReduceMean", {"x": ["N", 3, 4]}, attrs={"keepdims": 0}, opset=18)
    h.check_vjp(model, {"x": X})


def test_reduce_max_shares_ties_like_torch_amax() -> None:
    model = h.one_op_model(
        "ReduceMax", {"x": ["N", 4]}, attrs={"keepdims": 0}, initializers={"a": ints(1)}, opset=18
    )
    run = h.session(h.build_gradient_model(model))
    grad = run.run(
        ["mollify_gradient__x"],
        {"x": np.array([[1.0, 3.0, 3.0, 0.0]]), "mollify_cotangent__y": np.array([2.0])},
    )[0]
    np.testing.assert_allclose(grad, [[0.0, 1.0, 1.0, 0.0]])


RESIZES: list[tuple[str, dict[str, Any], tuple[float, ...] | None, tuple[int, ...] | None]] = [
    ("nearest-x2", {"mode": "nearest"}, (1, 1, 2, 2), None),
    (
        "nearest-x1.5-floor-asymmetric",
        {"mode": "nearest", "nearest_mode": "floor", "coordinate_transformation_mode": "asymmetric"},
        (1, 1, 1.5, 1.5),
        None,
    ),
    ("nearest-sizes-down", {"mode": "nearest"}, None, (3, 2)),
    ("linear-half-pixel-x2", {"mode": "linear"}, (1, 1, 2, 2), None),
    (
        "linear-align-corners-sizes",
        {"mode": "linear", "coordinate_transformation_mode": "align_corners"},
        None,
        (7, 5),
    ),
    (
        "linear-pytorch-half-pixel-down",
        {"mode": "linear", "coordinate_transformation_mode": "pytorch_half_pixel"},
        (1, 1, 0.5, 0.75),
        None,
    ),
    ("cubic-x2", {"mode": "cubic"}, (1, 1, 2, 2), None),
    ("nearest-channel-axis", {"mode": "nearest"}, (1, 2, 1, 1), None),
]


@pytest.mark.parametrize(("attrs", "scales", "sizes"), [r[1:] for r in RESIZES], ids=[r[0] for r in RESIZES])
def test_resize(
    attrs: dict[str, Any], scales: tuple[float, ...] | None, sizes: tuple[int, ...] | None
) -> None:
    inits: dict[str, np.ndarray] = {"roi": np.array([], dtype=np.float32)}
    order = ["x", "roi"]
    if scales is not None:
        inits["scales"] = np.array(scales, dtype=np.float32)
        order.append("scales")
    else:
        # sizes of the spatial axes only (opset 18 "axes"), so the batch stays free
        inits["scales"] = np.array([], dtype=np.float32)
        inits["sizes"] = np.array(sizes, dtype=np.int64)
        order += ["scales", "sizes"]
        attrs = {**attrs, "axes": [2, 3]}
    model = h.one_op_model(
        "Resize",
        {"x": ["N", 2, 4, 4]},
        dtype=h.F32,
        attrs=attrs,
        initializers=inits,
        input_order=order,
        opset=13 if sizes is None else 18,
    )
    h.check_vjp(model, {"x": h.randn(1, 2, 4, 4, dtype=np.float32)}, eps=0.5, tol=1e-4)


@pytest.mark.parametrize(("axis", "largest"), [(1, 1), (-1, 0)])
def test_top_k_values(axis: int, largest: int) -> None:
    model = h.one_op_model(
        "TopK",
        {"x": ["N", 3, 4]},
        attrs={"axis": axis, "largest": largest},
        initializers={"k": ints(2)},
        n_outputs=2,
    )
    h.check_vjp(model, {"x": X})


@pytest.mark.parametrize(("exclusive", "reverse"), [(0, 0), (1, 0), (0, 1), (1, 1)])
def test_cum_sum(exclusive: int, reverse: int) -> None:
    model = h.one_op_model(
        "CumSum",
        {"x": ["N", 3, 4]},
        attrs={"exclusive": exclusive, "reverse": reverse},
        initializers={"a": np.array(2, dtype=np.int64)},
    )
    h.check_vjp(model, {"x": X})


@pytest.mark.parametrize("p", [1, 2])
def test_lp_normalization(p: int) -> None:
    model = h.one_op_model("LpNormalization", {"x": ["N", 3, 4]}, attrs={"axis": 1, "p": p})
    h.check_vjp(model, {"x": np.where(np.abs(X) < 0.05, 0.3, X)})


EINSUMS = [
    ("outer", "bi,bj->bij", [(2, 3), (2, 4)]),
    ("attention-scores", "bhqd,bhkd->bhqk", [(2, 2, 3, 4), (2, 2, 5, 4)]),
    ("implicit-output", "bij,bjk", [(2, 3, 4), (2, 4, 2)]),
    ("ellipsis", "...ij,...jk->...ik", [(2, 3, 4), (2, 4, 2)]),
    ("summed-away", "bij,bk->bk", [(2, 3, 4), (2, 5)]),
]


@pytest.mark.parametrize(("equation", "shapes"), [e[1:] for e in EINSUMS], ids=[e[0] for e in EINSUMS])
def test_einsum(equation: str, shapes: list[tuple[int, ...]]) -> None:
    inputs = {f"x{i}": ["N", *s[1:]] for i, s in enumerate(shapes)}
    model = h.one_op_model("Einsum", inputs, attrs={"equation": equation}, opset=17)
    h.check_vjp(model, {f"x{i}": h.randn(*s, seed=i + 2) for i, s in enumerate(shapes)})


def test_einsum_diagonal_is_unsupported() -> None:
    model = h.one_op_model("Einsum", {"x": ["N", 3, 3]}, attrs={"equation": "bii->bi"})
    with pytest.raises(h.UnsupportedOpError, match="diagonal"):
        h.build_gradient_model(model)


def test_resize_with_sizes_computed_from_the_input_shape() -> None:
    # As legacy PyTorch exports F.interpolate(size=...): sizes = Concat(Shape(x)[:2], [7, 5]).
    nodes = [
        helper.make_node("Shape", ["x"], ["shape"]),
        helper.make_node("Slice", ["shape", "zero", "two"], ["lead"]),
        helper.make_node("Concat", ["lead", "hw"], ["sizes"], axis=0),
        helper.make_node(
            "Resize",
            ["x", "", "", "sizes"],
            ["y"],
            mode="linear",
            coordinate_transformation_mode="align_corners",
        ),
    ]
    inits = {"zero": ints(0), "two": ints(2), "hw": ints(7, 5)}
    model = _model(nodes, {"x": ["N", 2, 4, 4]}, inits, dtype=h.F32)
    h.check_vjp(
        model, {"x": h.randn(2, 2, 4, 4, dtype=np.float32)}, input_shapes={"x": (2, 4, 4)}, eps=0.5, tol=1e-4
    )


def test_upsample_in_an_opset_9_model_is_upgraded_to_resize() -> None:
    model = h.one_op_model(
        "Upsample",
        {"x": ["N", 2, 3, 3]},
        dtype=h.F32,
        attrs={"mode": "nearest"},
        initializers={"scales": np.array([1, 1, 2, 2], dtype=np.float32)},
        opset=9,
    )
    h.check_vjp(model, {"x": h.randn(2, 2, 3, 3, dtype=np.float32)}, eps=0.5, tol=1e-4)


RUN_TIME_SLICES: list[tuple[str, int, int, int]] = [
    ("middle", 1, 4, 2),
    ("from-the-end", -4, -1, -1),
    ("past-the-end", 2, 1000, 2),
    ("before-the-start", -1000, 2, -1),
    ("empty", 4, 1, 2),
]


@pytest.mark.parametrize(
    ("start", "end", "axis"), [s[1:] for s in RUN_TIME_SLICES], ids=[s[0] for s in RUN_TIME_SLICES]
)
def test_unit_step_slices_with_run_time_bounds_pad_the_gradient(start: int, end: int, axis: int) -> None:
    # starts = Shape(x)[2] - W + start, as legacy torch exports compute chunk bounds: not constants.
    # With unit steps the gradient is a Pad with amounts computed at run time, no index scatter.
    nodes = [
        helper.make_node("Shape", ["x"], ["shape"]),
        helper.make_node("Gather", ["shape", "two"], ["len"]),
        helper.make_node("Sub", ["len", "width"], ["offset"]),
        helper.make_node("Add", ["offset", "start0"], ["start"]),
        helper.make_node("Add", ["offset", "end0"], ["end"]),
        helper.make_node("Slice", ["x", "start", "end", "axis"], ["y"]),
    ]
    inits = {"two": ints(2), "width": ints(5), "start0": ints(start), "end0": ints(end), "axis": ints(axis)}
    model = _model(nodes, {"x": ["N", 3, "W"]}, inits)
    gradient = h.build_gradient_model(model)
    constants = {tensor.name for tensor in gradient.graph.initializer}
    assert "Pad" in {node.op_type for node in gradient.graph.node}
    # The only scatter left writes the pad amounts into a constant vector of zeros.
    assert all(
        node.input[0] in constants for node in gradient.graph.node if node.op_type == "ScatterElements"
    )
    x = h.randn(2, 3, 5)
    if start == 4 and end == 1:
        run = h.session(gradient)
        grad = run.run(["mollify_gradient__x"], {"x": x, "mollify_cotangent__y": np.zeros((2, 3, 0))})[0]
        np.testing.assert_array_equal(grad, np.zeros_like(x))
        return
    h.check_vjp(model, {"x": x})
