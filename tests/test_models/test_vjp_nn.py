"""VJP rules of Conv, ConvTranspose, pooling, Gemm, MatMul and normalisation against finite differences.

onnxruntime has no double Conv, ConvTranspose, AveragePool, GlobalAveragePool, GlobalMaxPool or
InstanceNormalization kernels: those run in float32. Conv, ConvTranspose and the average pools
are linear in their input, so a wide step (0.5) keeps central differences exact up to float32
rounding (tolerance 1e-4 of max|g|). Max pools are checked in float64 (MaxPool) or on inputs
whose values are spaced wider than the step (GlobalMaxPool), so no argmax changes.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from onnx import helper, numpy_helper

from tests.test_models import vjp_harness as h

LINEAR32 = {"eps": 0.5, "tol": 1e-4}


def f32(*shape: int, seed: int = 1) -> np.ndarray:
    return h.randn(*shape, seed=seed, dtype=np.float32)


CONV_CASES: list[tuple[str, tuple[int, ...], tuple[int, ...], dict[str, Any]]] = [
    ("3x3-pad1", (2, 3, 6, 6), (4, 3, 3, 3), {"pads": [1, 1, 1, 1]}),
    ("stride2-odd-rows-skipped", (2, 3, 8, 7), (4, 3, 3, 3), {"strides": [2, 2]}),
    ("stride3-asym-pads", (1, 2, 9, 8), (3, 2, 3, 2), {"strides": [3, 2], "pads": [0, 1, 2, 0]}),
    ("dilation2", (1, 2, 9, 9), (2, 2, 3, 3), {"dilations": [2, 2], "pads": [1, 2, 1, 2]}),
    ("groups2", (1, 4, 6, 6), (6, 2, 3, 3), {"group": 2, "pads": [1, 1, 1, 1]}),
    ("depthwise-stride2", (2, 4, 7, 7), (4, 1, 3, 3), {"group": 4, "strides": [2, 2], "pads": [1, 1, 1, 1]}),
    ("same-upper-stride2", (1, 2, 7, 8), (3, 2, 3, 3), {"auto_pad": "SAME_UPPER", "strides": [2, 2]}),
    ("same-lower-stride2", (1, 2, 7, 8), (3, 2, 4, 4), {"auto_pad": "SAME_LOWER", "strides": [2, 2]}),
    ("valid-stride2", (1, 2, 8, 9), (3, 2, 3, 3), {"auto_pad": "VALID", "strides": [2, 2]}),
    ("depthwise-stride1", (2, 4, 6, 5), (4, 1, 3, 3), {"group": 4, "pads": [1, 1, 1, 1]}),
    ("grouped-asym-pads-stride1", (1, 4, 6, 6), (4, 2, 3, 2), {"group": 2, "pads": [2, 0, 0, 1]}),
    ("same-lower-stride1", (1, 2, 6, 5), (3, 2, 4, 4), {"auto_pad": "SAME_LOWER"}),
    ("pad-wider-than-kernel", (1, 2, 4, 4), (3, 2, 1, 1), {"pads": [1, 1, 1, 1]}),
    ("1d", (2, 3, 10), (2, 3, 4), {"strides": [3], "pads": [1, 0]}),
    ("1d-stride1", (2, 3, 10), (2, 3, 4), {"pads": [2, 1]}),
    ("3d", (1, 2, 4, 5, 4), (2, 2, 2, 3, 2), {"strides": [1, 2, 1]}),
]


@pytest.mark.parametrize(
    ("x_shape", "w_shape", "attrs"), [c[1:] for c in CONV_CASES], ids=[c[0] for c in CONV_CASES]
)
def test_conv(x_shape: tuple[int, ...], w_shape: tuple[int, ...], attrs: dict[str, Any]) -> None:
    inits = {"w": f32(*w_shape, seed=2), "b": f32(w_shape[0], seed=3)}
    model = h.one_op_model("Conv", {"x": ["N", *x_shape[1:]]}, dtype=h.F32, attrs=attrs, initializers=inits)
    h.check_vjp(model, {"x": f32(*x_shape)}, **LINEAR32)


CONV_T_CASES: list[tuple[str, tuple[int, ...], tuple[int, ...], dict[str, Any]]] = [
    ("basic", (2, 3, 4, 4), (3, 2, 3, 3), {}),
    ("stride2-pads", (1, 3, 4, 5), (3, 2, 3, 3), {"strides": [2, 2], "pads": [1, 0, 1, 1]}),
    ("stride2-output-padding", (1, 2, 3, 3), (2, 2, 3, 3), {"strides": [2, 2], "output_padding": [1, 1]}),
    ("groups2-dilation", (1, 4, 4, 4), (4, 1, 2, 2), {"group": 2, "dilations": [2, 2]}),
    ("same-upper", (1, 2, 3, 4), (2, 3, 3, 3), {"auto_pad": "SAME_UPPER", "strides": [2, 2]}),
    ("same-lower", (1, 2, 3, 4), (2, 3, 4, 4), {"auto_pad": "SAME_LOWER", "strides": [2, 2]}),
    ("output-shape", (1, 2, 3, 3), (2, 2, 3, 3), {"strides": [2, 2], "output_shape": [8, 8]}),
]


@pytest.mark.parametrize(
    ("x_shape", "w_shape", "attrs"), [c[1:] for c in CONV_T_CASES], ids=[c[0] for c in CONV_T_CASES]
)
def test_conv_transpose(x_shape: tuple[int, ...], w_shape: tuple[int, ...], attrs: dict[str, Any]) -> None:
    inits = {"w": f32(*w_shape, seed=2)}
    model = h.one_op_model(
        "ConvTranspose", {"x": ["N", *x_shape[1:]]}, dtype=h.F32, attrs=attrs, initializers=inits
    )
    h.check_vjp(model, {"x": f32(*x_shape)}, **LINEAR32)


MAXPOOL_CASES: list[tuple[str, tuple[int, ...], dict[str, Any]]] = [
    ("2x2-stride2", (2, 2, 6, 6), {"kernel_shape": [2, 2], "strides": [2, 2]}),
    (
        "3x3-stride2-pad1-overlapping",
        (2, 2, 7, 7),
        {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1]},
    ),
    ("ceil-mode", (1, 2, 6, 7), {"kernel_shape": [3, 3], "strides": [2, 2], "ceil_mode": 1}),
    ("dilation", (1, 2, 7, 7), {"kernel_shape": [2, 2], "dilations": [2, 2]}),
    ("same-upper", (1, 2, 5, 6), {"kernel_shape": [3, 3], "strides": [2, 2], "auto_pad": "SAME_UPPER"}),
    ("1d-stride1", (2, 3, 9), {"kernel_shape": [3], "strides": [1]}),
]


@pytest.mark.parametrize(
    ("x_shape", "attrs"), [c[1:] for c in MAXPOOL_CASES], ids=[c[0] for c in MAXPOOL_CASES]
)
def test_max_pool(x_shape: tuple[int, ...], attrs: dict[str, Any]) -> None:
    model = h.one_op_model("MaxPool", {"x": ["N", *x_shape[1:]]}, attrs=attrs, opset=17)
    h.check_vjp(model, {"x": h.randn(*x_shape, seed=4)})


def test_max_pool_that_already_outputs_indices_reuses_them() -> None:
    attrs = {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1]}
    model = h.one_op_model("MaxPool", {"x": ["N", 2, 7, 7]}, attrs=attrs, n_outputs=2)
    gradient_model = h.build_gradient_model(model)
    assert sum(n.op_type == "MaxPool" for n in gradient_model.graph.node) == 1
    h.check_vjp(model, {"x": h.randn(1, 2, 7, 7, seed=4)})


def test_overlapping_max_pool_keeps_the_forward_node_and_adds_one_with_indices() -> None:
    # The forward MaxPool stays single-output, so onnxruntime keeps it in its blocked layout.
    attrs = {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1]}
    gradient_model = h.build_gradient_model(h.one_op_model("MaxPool", {"x": ["N", 2, 7, 7]}, attrs=attrs))
    pools = [n for n in gradient_model.graph.node if n.op_type == "MaxPool"]
    assert sorted(len(n.output) for n in pools) == [1, 2]


def test_tiled_max_pool_routes_through_argmax_without_indices() -> None:
    model = h.one_op_model(
        "MaxPool", {"x": ["N", 3, 6, 4]}, attrs={"kernel_shape": [2, 2], "strides": [2, 2]}
    )
    ops = [n.op_type for n in h.build_gradient_model(model).graph.node]
    assert "ArgMax" in ops and "ScatterElements" not in ops and ops.count("MaxPool") == 1
    h.check_vjp(model, {"x": h.randn(2, 3, 6, 4, seed=5)})


@pytest.mark.parametrize(
    ("kernel", "stride", "pad"),
    [(2, 2, 0), (3, 3, 0), (3, 2, 1)],
    ids=["tiled-2x2", "tiled-3x3", "overlapping-3x3"],
)
def test_max_pool_ties_go_to_the_first_maximum_like_torch(kernel: int, stride: int, pad: int) -> None:
    # Small integers: most windows hold several equal maxima; torch routes to the first one.
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(7)
    x = rng.integers(0, 3, size=(2, 3, 12, 12)).astype(np.float32)
    attrs = {"kernel_shape": [kernel, kernel], "strides": [stride, stride], "pads": [pad] * 4}
    model = h.one_op_model("MaxPool", {"x": ["N", 3, 12, 12]}, dtype=h.F32, attrs=attrs)
    gradient_model = h.build_gradient_model(model)
    meta = h.read_gradient_metadata(gradient_model)
    leaf = torch.from_numpy(x).requires_grad_(True)
    pooled = torch.nn.functional.max_pool2d(leaf, kernel, stride, pad)
    cotangent = rng.standard_normal(tuple(pooled.shape)).astype(np.float32)
    (expected,) = torch.autograd.grad(pooled, leaf, torch.from_numpy(cotangent))
    got = h.session(gradient_model).run([meta.gradients["x"]], {"x": x, meta.cotangent: cotangent})[0]
    np.testing.assert_array_equal(got, expected.numpy())


def _relu_pool_model(kernel: int, stride: int, pad: int, *, relu_also_feeds_add: bool) -> Any:
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c"], ["r"]),
        helper.make_node(
            "MaxPool", ["r"], ["p"], kernel_shape=[kernel, kernel], strides=[stride, stride], pads=[pad] * 4
        ),
    ]
    if relu_also_feeds_add:
        nodes += [
            helper.make_node("GlobalAveragePool", ["r"], ["s"]),
            helper.make_node("Add", ["p", "s"], ["y"]),
        ]
    else:
        nodes[-1].output[0] = "y"
    graph = helper.make_graph(
        nodes,
        "relu_pool",
        [helper.make_tensor_value_info("x", h.F32, ["N", 2, 8, 8])],
        [helper.make_tensor_value_info("y", h.F32, None)],
        initializer=[numpy_helper.from_array(f32(3, 2, 3, 3, seed=9), "w")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 10
    return model


@pytest.mark.parametrize("relu_also_feeds_add", [False, True], ids=["pool-only", "relu-used-twice"])
@pytest.mark.parametrize(("kernel", "stride", "pad"), [(2, 2, 0), (3, 2, 1)], ids=["tiled", "overlapping"])
def test_relu_before_max_pool_is_masked_on_the_pooled_side(
    kernel: int, stride: int, pad: int, relu_also_feeds_add: bool
) -> None:
    # Half the pre-activations negative: many windows are all zeros after the ReLU, whose gradient
    # must vanish exactly as in torch (ReLU's derivative at 0 is 0, whichever zero the pool picks).
    torch = pytest.importorskip("torch")
    model = _relu_pool_model(kernel, stride, pad, relu_also_feeds_add=relu_also_feeds_add)
    gradient_model = h.build_gradient_model(model)
    masks_at_full_size = [
        n for n in gradient_model.graph.node if n.op_type == "Greater" and n.input[0] in ("c", "r")
    ]
    assert len(masks_at_full_size) == (1 if relu_also_feeds_add else 0)
    meta = h.read_gradient_metadata(gradient_model)
    x = f32(3, 2, 8, 8, seed=10)
    weights = torch.from_numpy(f32(3, 2, 3, 3, seed=9))
    leaf = torch.from_numpy(x).requires_grad_(True)
    relu = torch.relu(torch.nn.functional.conv2d(leaf, weights, padding=1))
    y = torch.nn.functional.max_pool2d(relu, kernel, stride, pad)
    if relu_also_feeds_add:
        y = y + relu.mean(dim=(2, 3), keepdim=True)
    cotangent = np.random.default_rng(11).standard_normal(tuple(y.shape)).astype(np.float32)
    (expected,) = torch.autograd.grad(y, leaf, torch.from_numpy(cotangent))
    got = h.session(gradient_model).run([meta.gradients["x"]], {"x": x, meta.cotangent: cotangent})[0]
    np.testing.assert_allclose(got, expected.numpy(), rtol=1e-5, atol=1e-5)


AVGPOOL_CASES: list[tuple[str, tuple[int, ...], dict[str, Any], int]] = [
    ("2x2-stride2", (2, 2, 6, 6), {"kernel_shape": [2, 2], "strides": [2, 2]}, 17),
    ("pad-excluded", (1, 2, 5, 5), {"kernel_shape": [3, 3], "pads": [1, 1, 1, 1]}, 17),
    (
        "pad-included",
        (1, 2, 5, 5),
        {"kernel_shape": [3, 3], "pads": [1, 1, 1, 1], "count_include_pad": 1},
        17,
    ),
    ("ceil-mode", (1, 2, 8, 7), {"kernel_shape": [3, 3], "strides": [2, 2], "ceil_mode": 1}, 17),
    (
        "ceil-mode-pad-included",
        (1, 1, 6, 6),
        {
            "kernel_shape": [3, 3],
            "strides": [2, 2],
            "pads": [1, 1, 1, 1],
            "ceil_mode": 1,
            "count_include_pad": 1,
        },
        17,
    ),
    ("same-upper", (1, 2, 5, 6), {"kernel_shape": [2, 3], "strides": [2, 2], "auto_pad": "SAME_UPPER"}, 17),
    ("dilation-opset19", (1, 1, 7, 7), {"kernel_shape": [2, 2], "dilations": [2, 2]}, 19),
    ("1d", (2, 2, 9), {"kernel_shape": [3], "strides": [2]}, 17),
]


@pytest.mark.parametrize(
    ("x_shape", "attrs", "opset"), [c[1:] for c in AVGPOOL_CASES], ids=[c[0] for c in AVGPOOL_CASES]
)
def test_average_pool(x_shape: tuple[int, ...], attrs: dict[str, Any], opset: int) -> None:
    model = h.one_op_model("AveragePool", {"x": ["N", *x_shape[1:]]}, dtype=h.F32, attrs=attrs, opset=opset)
    h.check_vjp(model, {"x": f32(*x_shape)}, **LINEAR32)


def test_global_average_pool() -> None:
    model = h.one_op_model("GlobalAveragePool", {"x": ["N", 3, 4, 5]}, dtype=h.F32)
    h.check_vjp(model, {"x": f32(2, 3, 4, 5)}, **LINEAR32)


def test_global_max_pool() -> None:
    # Values 0.1 apart and a 0.01 step: no maximum changes place.
    x = (np.random.default_rng(5).permutation(2 * 3 * 4 * 5) * 0.1).reshape(2, 3, 4, 5).astype(np.float32)
    model = h.one_op_model("GlobalMaxPool", {"x": ["N", 3, 4, 5]}, dtype=h.F32)
    h.check_vjp(model, {"x": x}, eps=1e-2, tol=1e-3)


def _model(
    nodes: list[Any], inputs: dict[str, list[Any]], initializers: dict[str, np.ndarray], opset: int = 17
) -> Any:
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info(n, h.F64, s) for n, s in inputs.items()],
        [helper.make_tensor_value_info("y", h.F64, None)],
        initializer=[numpy_helper.from_array(np.asarray(v), k) for k, v in initializers.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 10
    return model


def test_gemm_with_weights_bias_alpha_beta() -> None:
    inits = {"w": h.randn(3, 4, seed=2), "b": h.randn(3, seed=3)}
    model = h.one_op_model(
        "Gemm", {"x": ["N", 4]}, attrs={"transB": 1, "alpha": 0.7, "beta": 1.3}, initializers=inits
    )
    h.check_vjp(model, {"x": h.randn(3, 4)})


@pytest.mark.parametrize(("trans_a", "trans_b"), [(0, 1), (1, 0), (1, 1), (0, 0)])
def test_gemm_differentiates_both_operands(trans_a: int, trans_b: int) -> None:
    # A and B both come from x (N, 4): A = x or x^T as transA needs, B likewise.
    a_src = "x"
    b_src = "x" if trans_a != trans_b else "xt"
    nodes = [
        helper.make_node("Transpose", ["x"], ["xt"], perm=[1, 0]),
        helper.make_node("Gemm", [a_src, b_src], ["y"], transA=trans_a, transB=trans_b, alpha=0.5),
    ]
    if trans_a == trans_b == 0:
        nodes[1] = helper.make_node("Gemm", ["x", "xt"], ["y"], alpha=0.5)
    model = _model(nodes, {"x": ["N", 4]}, {})
    h.check_vjp(model, {"x": h.randn(3, 4)})


def test_gemm_bias_from_the_input_is_reduced_to_its_shape() -> None:
    nodes = [
        helper.make_node("ReduceSum", ["x", "axes"], ["c"], keepdims=1),
        helper.make_node("Gemm", ["x", "w", "c"], ["y"], beta=0.5),
    ]
    model = _model(
        nodes, {"x": ["N", 4]}, {"w": h.randn(4, 4, seed=2), "axes": np.array([0], dtype=np.int64)}
    )
    h.check_vjp(model, {"x": h.randn(3, 4)})


def test_matmul_with_a_weight_matrix() -> None:
    model = h.one_op_model("MatMul", {"x": ["N", 3, 4]}, initializers={"w": h.randn(4, 5, seed=2)})
    h.check_vjp(model, {"x": h.randn(2, 3, 4)})


def test_matmul_batched_with_broadcast_batch_dims() -> None:
    model = h.one_op_model("MatMul", {"a": ["N", 2, 3, 4], "b": ["N", 1, 4, 5]})
    h.check_vjp(model, {"a": h.randn(2, 2, 3, 4), "b": h.randn(2, 1, 4, 5, seed=2)})


def test_matmul_broadcasts_a_lower_rank_operand_from_the_input() -> None:
    # b = ReduceSum(x, axis 0): (3, 4, 2) broadcast against a (N, 3, 2, 4)
    nodes = [
        helper.make_node("Transpose", ["x"], ["a"], perm=[0, 1, 3, 2]),
        helper.make_node("ReduceSum", ["x", "zero"], ["b"], keepdims=0),
        helper.make_node("MatMul", ["a", "b"], ["y"]),
    ]
    model = _model(nodes, {"x": ["N", 3, 4, 2]}, {"zero": np.array([0], dtype=np.int64)})
    h.check_vjp(model, {"x": h.randn(2, 3, 4, 2)})


@pytest.mark.parametrize("case", ["matrix-vector", "vector-matrix", "vector-vector"])
def test_matmul_with_1d_operands(case: str) -> None:
    shape: tuple[int, ...]
    if case == "matrix-vector":
        nodes = [
            helper.make_node("ReduceSum", ["x", "zero"], ["v"], keepdims=0),
            helper.make_node("MatMul", ["x", "v"], ["y"]),
        ]
        shape = (3, 4)
    elif case == "vector-matrix":
        nodes = [
            helper.make_node("ReduceSum", ["x", "zero2"], ["v"], keepdims=0),
            helper.make_node("MatMul", ["v", "x"], ["y"]),
        ]
        shape = (2, 4, 3)
    else:
        nodes = [
            helper.make_node("ReduceSum", ["x", "zero"], ["v"], keepdims=0),
            helper.make_node("MatMul", ["v", "v"], ["y"]),
        ]
        shape = (3, 4)
    inits = {"zero": np.array([0], dtype=np.int64), "zero2": np.array([0, 2], dtype=np.int64)}
    model = _model(nodes, {"x": ["N", *shape[1:]]}, inits)
    h.check_vjp(model, {"x": h.randn(*shape)})


def test_batch_normalization_inference() -> None:
    c = 3
    inits = {
        "s": h.randn(c, seed=2),
        "b": h.randn(c, seed=3),
        "m": h.randn(c, seed=4),
        "v": np.abs(h.randn(c, seed=5)) + 0.5,
    }
    model = h.one_op_model(
        "BatchNormalization", {"x": ["N", c, 4, 4]}, attrs={"epsilon": 1e-3}, initializers=inits
    )
    h.check_vjp(model, {"x": h.randn(2, c, 4, 4)})


def test_instance_normalization() -> None:
    inits = {"s": f32(3, seed=2), "b": f32(3, seed=3)}
    model = h.one_op_model("InstanceNormalization", {"x": ["N", 3, 6]}, dtype=h.F32, initializers=inits)
    h.check_vjp(model, {"x": f32(2, 3, 6)}, eps=1e-2, tol=2e-3)


@pytest.mark.parametrize("axis", [-1, 1])
def test_layer_normalization(axis: int) -> None:
    shape = (2, 3, 4)
    norm = shape[axis:] if axis >= 0 else shape[axis:]
    inits = {"s": h.randn(*norm, seed=2), "b": h.randn(*norm, seed=3)}
    model = h.one_op_model(
        "LayerNormalization", {"x": ["N", 3, 4]}, attrs={"axis": axis, "epsilon": 1e-3}, initializers=inits
    )
    h.check_vjp(model, {"x": h.randn(*shape)})


def test_conv_transpose_output_shape_with_same_upper() -> None:
    attrs = {"strides": [2, 2], "output_shape": [6, 7], "auto_pad": "SAME_UPPER"}
    model = h.one_op_model(
        "ConvTranspose",
        {"x": ["N", 2, 3, 4]},
        dtype=h.F32,
        attrs=attrs,
        initializers={"w": f32(2, 2, 3, 3, seed=2)},
    )
    h.check_vjp(model, {"x": f32(1, 2, 3, 4)}, **LINEAR32)


def test_shapes_and_max_pool_indices_of_forward_tensors_are_taken_in_the_forward_pass() -> None:
    # A node reading a forward tensor keeps its buffer alive until it runs: placed beside the
    # producer, the backward pass does not hold a full activation just for its shape or indices.
    model = _relu_pool_model(3, 2, 1, relu_also_feeds_add=False)
    gradient_model = h.build_gradient_model(model)
    meta = h.read_gradient_metadata(gradient_model)
    nodes = list(gradient_model.graph.node)
    first_backward = next(i for i, n in enumerate(nodes) if meta.cotangent in n.input)
    forward_tensors = {o for n in model.graph.node for o in n.output}
    probes = [
        i
        for i, n in enumerate(nodes)
        if n.op_type in ("Shape", "Size", "MaxPool") and n.input[0] in forward_tensors
    ]
    assert probes and all(i < first_backward for i in probes)
