"""VJP rules of elementwise ops and activations against central finite differences.

Float64 unless onnxruntime lacks a double kernel for the op or its gradient (Erf, Gelu, Celu:
float32 with a 1e-3 step and 1e-3 tolerance). Inputs keep clear of kinks (ReLU at 0,
HardSigmoid's corners) so that finite differences are exact there.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from onnx import helper

from tests.test_models import vjp_harness as h


def _away_from(values: np.ndarray, kinks: list[float], margin: float = 0.05) -> np.ndarray:
    out = values.copy()
    for k in kinks:
        near = np.abs(out - k) < margin
        out[near] = k + np.where(out[near] >= k, margin, -margin) * 2
    return out


X = h.randn(2, 3, 4, seed=3)
POSITIVE = np.abs(X) + 0.5

UNARY: list[tuple[str, dict[str, Any], np.ndarray]] = [
    ("Neg", {}, X),
    ("Sqrt", {}, POSITIVE),
    ("Exp", {}, X),
    ("Log", {}, POSITIVE),
    ("Abs", {}, _away_from(X, [0.0])),
    ("Reciprocal", {}, POSITIVE),
    ("Sin", {}, X),
    ("Cos", {}, X),
    ("Relu", {}, _away_from(X, [0.0])),
    ("LeakyRelu", {"alpha": 0.1}, _away_from(X, [0.0])),
    ("ThresholdedRelu", {"alpha": 0.3}, _away_from(X, [0.3])),
    ("Sigmoid", {}, X),
    ("Tanh", {}, X),
    ("HardSigmoid", {"alpha": 0.3, "beta": 0.4}, _away_from(3 * X, [-4 / 3, 2.0])),
    ("HardSwish", {}, _away_from(3 * X, [-3.0, 3.0])),
    ("Elu", {"alpha": 0.7}, _away_from(X, [0.0])),
    ("Selu", {}, _away_from(X, [0.0])),
    ("Softplus", {}, X),
    ("Softsign", {}, X),
    ("Mish", {}, X),
    ("Identity", {}, X),
    ("Floor", {}, _away_from(3 * X, [float(k) for k in range(-10, 11)])),
    ("Ceil", {}, _away_from(3 * X, [float(k) for k in range(-10, 11)])),
    ("Round", {}, _away_from(3 * X, [k + 0.5 for k in range(-10, 11)])),
    ("Sign", {}, _away_from(X, [0.0])),
]


@pytest.mark.parametrize(("op", "attrs", "x"), UNARY, ids=[u[0] for u in UNARY])
def test_unary_float64(op: str, attrs: dict[str, Any], x: np.ndarray) -> None:
    model = h.one_op_model(op, {"x": ["N", 3, 4]}, attrs=attrs, opset=18)
    h.check_vjp(model, {"x": x})


FLOAT32_UNARY: list[tuple[str, dict[str, Any], int]] = [
    ("Tan", {}, 17),
    ("Atan", {}, 17),
    ("Sinh", {}, 17),
    ("Cosh", {}, 17),
    ("Atanh", {}, 17),
    ("Asin", {}, 17),
    ("Acos", {}, 17),
    ("Asinh", {}, 17),
    ("Acosh", {}, 17),
    ("Hardmax", {}, 17),
    ("Erf", {}, 17),
    ("Celu", {"alpha": 0.8}, 17),
    ("Gelu", {}, 20),
    ("Gelu", {"approximate": "tanh"}, 20),
]


@pytest.mark.parametrize(
    ("op", "attrs", "opset"),
    FLOAT32_UNARY,
    ids=[f"{op}-{attrs.get('approximate', '')}" for op, attrs, _ in FLOAT32_UNARY],
)
def test_unary_float32(op: str, attrs: dict[str, Any], opset: int) -> None:
    model = h.one_op_model(op, {"x": ["N", 3, 4]}, attrs=attrs, dtype=h.F32, opset=opset)
    x = _away_from(X, [0.0])
    if op in ("Tan", "Atanh", "Asin", "Acos"):
        x = np.tanh(x) * 0.7  # inside the domain, away from the poles
    elif op == "Acosh":
        x = POSITIVE + 1.0
    h.check_vjp(model, {"x": x.astype(np.float32)}, eps=3e-3, tol=1e-3)


def test_prelu_broadcasts_its_slope_per_channel() -> None:
    slope = np.array([[0.1], [0.5], [-0.2]])
    model = h.one_op_model("PRelu", {"x": ["N", 3, 4]}, initializers={"slope": slope})
    h.check_vjp(model, {"x": _away_from(X, [0.0])})


@pytest.mark.parametrize("opset", [11, 13], ids=["opset11-flatten", "opset13-axis"])
@pytest.mark.parametrize("op", ["Softmax", "LogSoftmax"])
def test_softmax_axis_semantics(op: str, opset: int) -> None:
    # axis=1 on a rank-3 input: opset < 13 normalises over the flattened (3*4), opset >= 13 over 3.
    model = h.one_op_model(op, {"x": ["N", 3, 4]}, attrs={"axis": 1}, opset=opset)
    h.check_vjp(model, {"x": X})


def test_softmax_default_axis_is_last_from_opset_13() -> None:
    h.check_vjp(h.one_op_model("Softmax", {"x": ["N", 3, 4]}, opset=13), {"x": X})


BINARY = ["Add", "Sub", "Mul", "Div", "Pow", "Max", "Min"]


def _binary_feeds(op: str, b_shape: tuple[int, ...]) -> dict[str, np.ndarray]:
    a = POSITIVE if op in ("Pow", "Div") else X
    b = h.randn(*b_shape, seed=5)
    if op == "Div":
        b = np.abs(b) + 0.5
    if op == "Pow":
        b = np.clip(b, -1.5, 1.5)
    return {"a": a, "b": b}


@pytest.mark.parametrize(
    "b_shape", [(2, 3, 4), (2, 1, 4), (2, 3, 1)], ids=["same", "bcast-mid", "bcast-last"]
)
@pytest.mark.parametrize("op", BINARY)
def test_binary_with_broadcasting_both_inputs(op: str, b_shape: tuple[int, ...]) -> None:
    model = h.one_op_model(op, {"a": ["N", 3, 4], "b": ["N", *b_shape[1:]]})
    h.check_vjp(model, _binary_feeds(op, b_shape))


@pytest.mark.parametrize("op", ["Add", "Sub", "Mul", "Div"])
def test_binary_gradient_reduced_over_leading_axes(op: str) -> None:
    # t = ReduceSum(x, [0, 1]) has shape (4,): y = op(x, t) broadcasts t over (N, 3, 4).
    nodes = [
        helper.make_node("ReduceSum", ["x", "axes"], ["t"], keepdims=0),
        helper.make_node(op, ["x", "t"], ["y"]),
    ]
    model = _graph(nodes, {"axes": np.array([0, 1], dtype=np.int64)})
    x = POSITIVE if op == "Div" else X
    h.check_vjp(model, {"x": x})


def _graph(
    nodes: list[Any],
    initializers: dict[str, np.ndarray],
    inputs: dict[str, list[Any]] | None = None,
    opset: int = 17,
) -> Any:
    inputs = inputs or {"x": ["N", 3, 4]}
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info(n, h.F64, s) for n, s in inputs.items()],
        [helper.make_tensor_value_info("y", h.F64, None)],
        initializer=[_tensor(k, v) for k, v in initializers.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 10
    return model


def _tensor(name: str, value: np.ndarray) -> Any:
    from onnx import numpy_helper

    return numpy_helper.from_array(np.asarray(value), name)


@pytest.mark.parametrize("exponent", [2.0, 3.0, 0.5, -1.5])
def test_pow_with_a_constant_exponent(exponent: float) -> None:
    model = h.one_op_model("Pow", {"x": ["N", 3, 4]}, initializers={"e": np.array(exponent)})
    h.check_vjp(model, {"x": POSITIVE})


def test_a_tensor_used_twice_accumulates_both_contributions() -> None:
    model = h.one_op_model("Mul", {"x": ["N", 3, 4]}, input_order=["x", "x"])
    grads = h.check_vjp(model, {"x": X})
    assert grads["x"].shape == X.shape


@pytest.mark.parametrize("op", ["Sum", "Mean", "Max", "Min"])
def test_variadic_ops(op: str) -> None:
    # onnxruntime has no double Mean kernel: float32 there, exact for a linear op with a wide step.
    dtype, eps, tol = (h.F32, 1e-1, 1e-4) if op == "Mean" else (h.F64, 1e-6, 1e-6)
    np_dtype = h.np_type(dtype)
    model = h.one_op_model(op, {"a": ["N", 3, 4], "b": ["N", 3, 4], "c": ["N", 1, 4]}, dtype=dtype)
    feeds = {"a": X, "b": h.randn(2, 3, 4, seed=7), "c": h.randn(2, 1, 4, seed=8)}
    h.check_vjp(model, {k: v.astype(np_dtype) for k, v in feeds.items()}, eps=eps, tol=tol)


def test_max_shares_the_gradient_of_ties() -> None:
    model = h.one_op_model("Max", {"a": ["N", 3], "b": ["N", 3]})
    meta_grads = h.check_vjp(model, {"a": np.array([[1.0, 2.0, 3.0]]), "b": np.array([[0.0, 5.0, -1.0]])})
    assert meta_grads["a"].shape == (1, 3)
    tied = h.build_gradient_model(model)
    run = h.session(tied)
    a = np.array([[1.0, 2.0, 3.0]])
    w = np.array([[1.0, 1.0, 4.0]])
    ga, gb = run.run(None, {"a": a, "b": a.copy(), "mollify_cotangent__y": w})[1:]
    np.testing.assert_allclose(ga, [[0.5, 0.5, 2.0]])
    np.testing.assert_allclose(gb, [[0.5, 0.5, 2.0]])


def test_where_routes_the_gradient_by_its_condition() -> None:
    nodes = [
        helper.make_node("Greater", ["x", "zero"], ["c"]),
        helper.make_node("Where", ["c", "x", "z"], ["y"]),
    ]
    model = _graph(nodes, {"zero": np.array(0.0)}, inputs={"x": ["N", 3, 4], "z": ["N", 1, 4]})
    h.check_vjp(model, {"x": _away_from(X, [0.0]), "z": h.randn(2, 1, 4, seed=9)})


@pytest.mark.parametrize("bounds", ["both", "min-only", "max-only"])
def test_clip_with_bounds_as_inputs(bounds: str) -> None:
    low = np.array(-0.5) if bounds != "max-only" else None
    high = np.array(0.7) if bounds != "min-only" else None
    inits = {k: v for k, v in (("lo", low), ("hi", high)) if v is not None}
    order = ["x", "lo" if low is not None else "", "hi" if high is not None else ""]
    model = h.one_op_model("Clip", {"x": ["N", 3, 4]}, initializers=inits, input_order=order, opset=13)
    h.check_vjp(model, {"x": _away_from(X, [-0.5, 0.7])})


def test_clip_with_bounds_as_attributes_in_an_opset_6_model_is_upgraded() -> None:
    model = h.one_op_model("Clip", {"x": ["N", 3, 4]}, attrs={"min": -0.5, "max": 0.7}, opset=6, dtype=h.F32)
    assert h.read_gradient_metadata(h.build_gradient_model(model)).opset == 17
    h.check_vjp(model, {"x": _away_from(X, [-0.5, 0.7]).astype(np.float32)}, eps=1e-2, tol=1e-4)


def test_dropout_and_cast_pass_the_gradient() -> None:
    nodes = [
        helper.make_node("Dropout", ["x", "ratio"], ["d"]),
        helper.make_node("Cast", ["d"], ["f"], to=h.F32),
        helper.make_node("Cast", ["f"], ["y"], to=h.F64),
    ]
    model = _graph(nodes, {"ratio": np.array(0.3)}, opset=13)
    # float32 rounding in the middle: a wide step keeps finite differences exact for this linear map
    h.check_vjp(model, {"x": X}, eps=1e-1, tol=1e-5)


def test_broadcasting_with_unknown_sizes_is_resolved_at_run_time() -> None:
    # half = Max(Shape(x)[1] // 2, 1) is beyond shape inference, so t and u have unknown widths
    # and the gradient's broadcast reduction is computed when the graph runs.
    ints = {
        "one": np.array([1], dtype=np.int64),
        "two": np.array([2], dtype=np.int64),
        "zero": np.array([0], dtype=np.int64),
        "big": np.array([1000], dtype=np.int64),
    }
    nodes = [
        helper.make_node("Shape", ["x"], ["shape"]),
        helper.make_node("Gather", ["shape", "one"], ["width"]),
        helper.make_node("Div", ["width", "two"], ["quotient"]),
        helper.make_node("Max", ["quotient", "one"], ["half"]),
        helper.make_node("Slice", ["x", "zero", "half", "one"], ["t"]),
        helper.make_node("Slice", ["x", "half", "big", "one"], ["u"]),
        helper.make_node("Mul", ["t", "u"], ["y"]),
    ]
    model = _graph(nodes, ints, inputs={"x": ["N", 6]})
    gradient_model = h.build_gradient_model(model)
    assert any(n.op_type == "NonZero" for n in gradient_model.graph.node), "expected the run-time reduction"
    h.check_vjp(model, {"x": h.randn(2, 6)})
