"""VJP rules of LSTM, GRU and RNN against finite differences.

onnxruntime runs these ops in float32 only (and ``layout=1`` not at all), so two references:

* float64: onnx's reference evaluator runs the forward model (its own implementation of the
  operators: directions, layouts, initial states, biases, peepholes, ``linear_before_reset``)
  and the gradient model; central differences with step 1e-6 must agree to 1e-6 of max|g|.
* float32: onnxruntime, for what the reference evaluator lacks (``sequence_lens``, ``clip``,
  ``input_forget``, other activations) and to pin onnxruntime's reading of them; step 1e-2
  (1e-3 where ``clip`` or an activation's kink lies near the inputs) and tolerance 2e-3 of
  max|g|, far below the error of any wrong term.

The test models look like exports: batch-first graph inputs ``x (N, T, I)`` and ``h0/c0 (N, D, H)``
transposed into the node (``layout=0``) or fed directly (``layout=1``), every used output
flattened per sample into one explained tensor.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from onnx.reference import ReferenceEvaluator

from tests.test_models import vjp_harness as h

GATES = {"LSTM": 4, "GRU": 3, "RNN": 1}
F32 = {"eps": 1e-2, "tol": 2e-3}


def recurrent_model(
    op: str,
    *,
    direction: str = "forward",
    layout: int = 0,
    steps: int | str = 4,
    features: int = 3,
    hidden: int = 3,
    bias: bool = True,
    lens: bool = False,
    initial: bool = False,
    peepholes: bool = False,
    outputs: Sequence[str] = ("Y", "Y_h"),
    attrs: Mapping[str, Any] | None = None,
    dtype: int = TensorProto.DOUBLE,
    seed: int = 3,
) -> onnx.ModelProto:
    """One recurrent node between batch-first graph inputs and one per-sample explained tensor ``out``."""
    np_dtype = helper.tensor_dtype_to_np_dtype(dtype)
    rng = np.random.default_rng(seed)
    d = 2 if direction == "bidirectional" else 1
    g = GATES[op]
    inits: dict[str, np.ndarray] = {
        "W": rng.normal(0, 0.6, (d, g * hidden, features)),
        "R": rng.normal(0, 0.6, (d, g * hidden, hidden)),
        "flat": np.asarray([0, -1], np.int64),
    }
    if bias:
        inits["B"] = rng.normal(0, 0.3, (d, 2 * g * hidden))
    if peepholes:
        inits["P"] = rng.normal(0, 0.5, (d, 3 * hidden))
    inputs = [helper.make_tensor_value_info("x", dtype, ["N", steps, features])]
    nodes: list[onnx.NodeProto] = []

    def to_node(name: str, perm: list[int]) -> str:
        if layout:
            return name
        nodes.append(helper.make_node("Transpose", [name], [name + "_tm"], perm=perm))
        return name + "_tm"

    slots = ["x", "W", "R", "B" if bias else "", "lens" if lens else ""]
    slots[0] = to_node("x", [1, 0, 2])
    if lens:
        inputs.append(helper.make_tensor_value_info("lens", TensorProto.INT32, ["N"]))
    states = ["h0", "c0"] if op == "LSTM" else ["h0"]
    for state in states:
        if initial:
            inputs.append(helper.make_tensor_value_info(state, dtype, ["N", d, hidden]))
            slots.append(to_node(state, [1, 0, 2]))
        else:
            slots.append("")
    if op == "LSTM" and peepholes:
        slots.append("P")
    while slots[-1] == "":
        slots.pop()
    node_outputs = ["Y", "Y_h", "Y_c"] if op == "LSTM" else ["Y", "Y_h"]
    node_attrs = {
        "hidden_size": hidden,
        "direction": direction,
        **({"layout": 1} if layout else {}),
        **dict(attrs or {}),
    }
    nodes.append(helper.make_node(op, slots, node_outputs, name=f"{op}_under_test", **node_attrs))
    flat = []
    for name in outputs:
        batch_first = name if layout else _transposed(nodes, name, [2, 0, 1, 3] if name == "Y" else [1, 0, 2])
        nodes.append(helper.make_node("Reshape", [batch_first, "flat"], [name + "_flat"]))
        flat.append(name + "_flat")
    nodes.append(helper.make_node("Concat", flat, ["out"], axis=1))
    graph = helper.make_graph(
        nodes,
        f"{op}_model",
        inputs,
        [helper.make_tensor_value_info("out", dtype, ["N", None])],
        initializer=[
            numpy_helper.from_array(v if v.dtype == np.int64 else v.astype(np_dtype), k)
            for k, v in inits.items()
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 10
    return model


def _transposed(nodes: list[onnx.NodeProto], name: str, perm: list[int]) -> str:
    nodes.append(helper.make_node("Transpose", [name], [name + "_bf"], perm=perm))
    return name + "_bf"


def feeds_for(model: onnx.ModelProto, batch: int = 2, steps: int = 4, seed: int = 5) -> dict[str, np.ndarray]:
    """Random float inputs (the batch first, time second), and sequence lengths from ``steps`` down."""
    rng = np.random.default_rng(seed)
    feeds: dict[str, np.ndarray] = {}
    for value in model.graph.input:
        tensor = value.type.tensor_type
        if tensor.elem_type == TensorProto.INT32:
            feeds[value.name] = np.asarray([max(1, steps - 2 * i) for i in range(batch)], np.int32)
            continue
        dims = [
            batch if i == 0 else (steps if d.dim_param else d.dim_value)
            for i, d in enumerate(tensor.shape.dim)
        ]
        feeds[value.name] = rng.normal(0, 1, dims).astype(helper.tensor_dtype_to_np_dtype(tensor.elem_type))
    return feeds


def check_vjp_reference(
    model: onnx.ModelProto, feeds: Mapping[str, np.ndarray], *, eps: float = 1e-6, tol: float = 1e-6
) -> None:
    """``J^T w`` of the gradient model against central differences, both run by onnx's reference evaluator."""
    gradient_model = h.build_gradient_model(model)
    onnx.checker.check_model(gradient_model)
    meta = h.read_gradient_metadata(gradient_model)
    forward, backward = ReferenceEvaluator(model), ReferenceEvaluator(gradient_model)

    def value(local: Mapping[str, np.ndarray]) -> np.ndarray:
        return np.asarray(forward.run([meta.explained], dict(local))[0])

    cotangent = np.random.default_rng(0).standard_normal(value(feeds).shape)
    analytic = backward.run([meta.gradients[n] for n in meta.inputs], {**feeds, meta.cotangent: cotangent})
    for name, got in zip(meta.inputs, analytic, strict=True):
        numeric = np.zeros_like(feeds[name])
        for index in np.ndindex(numeric.shape):
            plus, minus = dict(feeds), dict(feeds)
            plus[name], minus[name] = feeds[name].copy(), feeds[name].copy()
            plus[name][index] += eps
            minus[name][index] -= eps
            numeric[index] = ((value(plus) - value(minus)) * cotangent).sum() / (2 * eps)
        scale = float(np.abs(numeric).max())
        np.testing.assert_allclose(got, numeric, rtol=tol, atol=tol * scale, err_msg=f"gradient of {name}")


# --------------------------------------------------------------------------- float64, reference evaluator

DIRECTIONS = ["forward", "reverse", "bidirectional"]
OUTPUTS = {"LSTM": ("Y", "Y_h", "Y_c"), "GRU": ("Y", "Y_h"), "RNN": ("Y", "Y_h")}


@pytest.mark.parametrize("layout", [0, 1], ids=["layout0", "layout1"])
@pytest.mark.parametrize("direction", DIRECTIONS)
@pytest.mark.parametrize("op", ["LSTM", "GRU", "RNN"])
def test_directions_and_layouts_with_initial_states_match_float64_differences(
    op: str, direction: str, layout: int
) -> None:
    model = recurrent_model(op, direction=direction, layout=layout, initial=True, outputs=OUTPUTS[op])
    check_vjp_reference(model, feeds_for(model))


@pytest.mark.parametrize("direction", DIRECTIONS)
def test_gru_linear_before_reset_matches_float64_differences(direction: str) -> None:
    model = recurrent_model("GRU", direction=direction, initial=True, attrs={"linear_before_reset": 1})
    check_vjp_reference(model, feeds_for(model))


@pytest.mark.parametrize("direction", ["forward", "bidirectional"])
def test_lstm_peepholes_match_float64_differences(direction: str) -> None:
    model = recurrent_model("LSTM", direction=direction, initial=True, peepholes=True, outputs=("Y", "Y_c"))
    check_vjp_reference(model, feeds_for(model))


@pytest.mark.parametrize("op", ["LSTM", "GRU", "RNN"])
def test_without_bias_or_initial_state_matches_float64_differences(op: str) -> None:
    model = recurrent_model(op, direction="bidirectional", bias=False)
    check_vjp_reference(model, feeds_for(model))


def test_two_stacked_bidirectional_layers_match_float64_differences() -> None:
    """Layer 2 reads layer 1's Y as the exporters wire it: (T, 2, N, H) -> (T, N, 2H)."""
    rng = np.random.default_rng(9)
    hidden, features = 3, 2
    inits = {
        "W1": rng.normal(0, 0.6, (2, 4 * hidden, features)),
        "R1": rng.normal(0, 0.6, (2, 4 * hidden, hidden)),
        "W2": rng.normal(0, 0.6, (2, 4 * hidden, 2 * hidden)),
        "R2": rng.normal(0, 0.6, (2, 4 * hidden, hidden)),
        "B2": rng.normal(0, 0.3, (2, 8 * hidden)),
        "merge": np.asarray([0, 0, -1], np.int64),
    }
    nodes = [
        helper.make_node("Transpose", ["x"], ["x_tm"], perm=[1, 0, 2]),
        helper.make_node("LSTM", ["x_tm", "W1", "R1"], ["y1"], hidden_size=hidden, direction="bidirectional"),
        helper.make_node("Transpose", ["y1"], ["y1_t"], perm=[0, 2, 1, 3]),
        helper.make_node("Reshape", ["y1_t", "merge"], ["layer2_in"]),
        helper.make_node(
            "LSTM",
            ["layer2_in", "W2", "R2", "B2"],
            ["", "y2_h"],
            hidden_size=hidden,
            direction="bidirectional",
        ),
        helper.make_node("Transpose", ["y2_h"], ["out"], perm=[1, 0, 2]),
    ]
    graph = helper.make_graph(
        nodes,
        "stacked",
        [helper.make_tensor_value_info("x", TensorProto.DOUBLE, ["N", 4, features])],
        [helper.make_tensor_value_info("out", TensorProto.DOUBLE, ["N", 2, hidden])],
        initializer=[numpy_helper.from_array(v, k) for k, v in inits.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 10
    check_vjp_reference(model, feeds_for(model))


# --------------------------------------------------------------------------- float32, onnxruntime


@pytest.mark.parametrize("direction", DIRECTIONS)
@pytest.mark.parametrize("op", ["LSTM", "GRU", "RNN"])
def test_sequence_lens_keep_the_state_past_each_end_like_onnxruntime(op: str, direction: str) -> None:
    model = recurrent_model(
        op,
        direction=direction,
        steps=5,
        lens=True,
        initial=True,
        outputs=OUTPUTS[op],
        dtype=TensorProto.FLOAT,
    )
    feeds = feeds_for(model, batch=3, steps=5)
    assert feeds["lens"].tolist() == [5, 3, 1]
    h.check_vjp(model, feeds, **F32)


@pytest.mark.parametrize(
    ("op", "attrs"),
    [
        ("LSTM", {"clip": 0.6}),
        ("GRU", {"clip": 0.5}),
        ("GRU", {"clip": 0.5, "linear_before_reset": 1}),
        ("RNN", {"clip": 0.4}),
    ],
    ids=["lstm", "gru", "gru-linear-before-reset", "rnn"],
)
def test_clip_bounds_the_gate_inputs_like_onnxruntime(op: str, attrs: dict[str, Any]) -> None:
    model = recurrent_model(op, direction="bidirectional", attrs=attrs, dtype=TensorProto.FLOAT)
    h.check_vjp(model, feeds_for(model), eps=1e-3, tol=2e-3)


def test_lstm_input_forget_couples_the_gates_like_onnxruntime() -> None:
    model = recurrent_model(
        "LSTM",
        peepholes=True,
        initial=True,
        outputs=("Y", "Y_c"),
        attrs={"input_forget": 1},
        dtype=TensorProto.FLOAT,
    )
    h.check_vjp(model, feeds_for(model), **F32)


ACTIVATION_CASES: list[tuple[str, str, dict[str, Any]]] = [
    (
        "lstm-hardsigmoid-elu-softsign",
        "LSTM",
        {
            "activations": ["HardSigmoid", "Elu", "Softsign"],
            "activation_alpha": [0.3, 0.8],
            "activation_beta": [0.4],
        },
    ),
    (
        "lstm-affine-scaledtanh-softplus",
        "LSTM",
        {
            "activations": ["Affine", "ScaledTanh", "Softplus"],
            "activation_alpha": [0.5, 1.2],
            "activation_beta": [0.6, 0.7],
        },
    ),
    ("lstm-defaults-for-missing-alpha-beta", "LSTM", {"activations": ["HardSigmoid", "LeakyRelu", "Elu"]}),
    ("gru-sigmoid-leakyrelu", "GRU", {"activations": ["Sigmoid", "LeakyRelu"], "activation_alpha": [0.2]}),
    ("gru-relu-before-reset", "GRU", {"activations": ["Sigmoid", "Relu"], "linear_before_reset": 1}),
    ("rnn-relu", "RNN", {"activations": ["Relu"]}),
    ("rnn-thresholdedrelu", "RNN", {"activations": ["ThresholdedRelu"], "activation_alpha": [0.05]}),
    ("rnn-sigmoid", "RNN", {"activations": ["Sigmoid"]}),
]


@pytest.mark.parametrize(
    ("op", "attrs"), [c[1:] for c in ACTIVATION_CASES], ids=[c[0] for c in ACTIVATION_CASES]
)
def test_activations_of_the_operator_definition_match_onnxruntime(op: str, attrs: dict[str, Any]) -> None:
    model = recurrent_model(op, attrs=attrs, dtype=TensorProto.FLOAT)
    h.check_vjp(model, feeds_for(model), **F32)


def test_bidirectional_activations_consume_alpha_and_beta_in_order_across_directions() -> None:
    # The reverse direction's HardSigmoid takes alpha 0.15 and the default beta 0.5; its Elu alpha 0.9.
    # Small steps: the Elu's slope jumps at 0 (from 1 to 0.9).
    attrs = {
        "activations": ["Sigmoid", "Tanh", "Tanh", "HardSigmoid", "Tanh", "Elu"],
        "activation_alpha": [0.15, 0.9],
    }
    model = recurrent_model(
        "LSTM", direction="bidirectional", attrs=attrs, outputs=("Y", "Y_h", "Y_c"), dtype=TensorProto.FLOAT
    )
    h.check_vjp(model, feeds_for(model), eps=1e-3, tol=2e-3)


@pytest.mark.parametrize(
    "outputs", [("Y",), ("Y_h",), ("Y_c",), ("Y_h", "Y_c")], ids=["Y", "Y_h", "Y_c", "Y_h+Y_c"]
)
def test_any_subset_of_lstm_outputs(outputs: tuple[str, ...]) -> None:
    model = recurrent_model(
        "LSTM", direction="reverse", initial=True, outputs=outputs, dtype=TensorProto.FLOAT
    )
    h.check_vjp(model, feeds_for(model), **F32)


@pytest.mark.parametrize("op", ["LSTM", "GRU"])
def test_a_dynamic_sequence_length_needs_no_static_shape(op: str) -> None:
    model = recurrent_model(op, direction="bidirectional", steps="T", initial=True, dtype=TensorProto.FLOAT)
    for steps in (2, 6):
        h.check_vjp(model, feeds_for(model, steps=steps), **F32)


def test_the_gradient_graph_does_not_grow_with_the_sequence_length() -> None:
    """Backpropagation through time runs in Scan loops: no node per time step."""
    sizes = {
        steps: len(
            h.build_gradient_model(recurrent_model("LSTM", direction="bidirectional", steps=steps)).graph.node
        )
        for steps in (3, 40)
    }
    assert sizes[3] == sizes[40], sizes


# --------------------------------------------------------------------------- refusals


def test_weights_computed_from_the_input_are_refused_naming_the_node() -> None:
    model = recurrent_model("RNN", bias=False, dtype=TensorProto.FLOAT)
    graph = model.graph
    # W becomes W0 * mean(x): a weight that depends on the differentiated input.
    graph.initializer[0].name = "W0"
    graph.node.insert(0, helper.make_node("ReduceMean", ["x"], ["x_mean"], keepdims=0))
    graph.node.insert(1, helper.make_node("Mul", ["W0", "x_mean"], ["W"]))
    with pytest.raises(h.UnsupportedOpError) as caught:
        h.build_gradient_model(model)
    assert caught.value.op_type == "RNN" and caught.value.node_name == "RNN_under_test"
    assert "W input 'W'" in str(caught.value) and "recurrent weights are not differentiated" in str(
        caught.value
    )


def test_a_wrong_number_of_activations_is_refused_naming_the_node() -> None:
    model = recurrent_model("GRU", direction="bidirectional", attrs={"activations": ["Sigmoid", "Tanh"]})
    with pytest.raises(h.UnsupportedOpError) as caught:
        h.build_gradient_model(model)
    assert caught.value.node_name == "GRU_under_test" and "takes 4" in str(caught.value)
