"""models.runtime: GradientSession as a GradientModel, its validation, ForwardSession, providers."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from estimator.errors import InvalidArgumentError
from estimator.gradient_model import GradientBatch, GradientModel
from models.gradient_graph import InvalidModelError, build_gradient_model
from models.runtime import (
    CPU_PROVIDER,
    CUDA_PROVIDER,
    DeviceUnavailableError,
    ForwardSession,
    GradientSession,
    available_providers,
    estimate_bytes_per_sample,
    forward_model,
)

FEATURES, CLASSES = 5, 3


def _linear_softmax(
    seed: int = 0, features: int = FEATURES, classes: int = CLASSES
) -> tuple[onnx.ModelProto, np.ndarray, np.ndarray]:
    """``probabilities = Softmax(tanh(x) @ W + b)`` with the pre-softmax ``logits`` as an intermediate."""
    rng = np.random.default_rng(seed)
    weight = rng.normal(size=(features, classes)).astype(np.float32)
    bias = rng.normal(size=(classes,)).astype(np.float32)
    graph = helper.make_graph(
        [
            helper.make_node("Tanh", ["x"], ["hidden"]),
            helper.make_node("Gemm", ["hidden", "W", "b"], ["logits"]),
            helper.make_node("Softmax", ["logits"], ["probabilities"], axis=-1),
        ],
        "linear_softmax",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", features])],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["batch", classes])],
        [numpy_helper.from_array(weight, "W"), numpy_helper.from_array(bias, "b")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 10
    return model, weight, bias


def _expected(
    x: np.ndarray, w: np.ndarray, weight: np.ndarray, bias: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    hidden = np.tanh(x.astype(np.float64))
    logits = hidden @ weight + bias
    gradient = (w @ weight.T) * (1.0 - hidden**2)
    return logits, gradient


@pytest.fixture(scope="module")
def gradient_model() -> onnx.ModelProto:
    model, _, _ = _linear_softmax()
    return build_gradient_model(model, explained="logits")


@pytest.fixture(scope="module")
def session(gradient_model: onnx.ModelProto) -> GradientSession:
    return GradientSession(gradient_model, device="cpu")


def _batch(batch: int = 4, seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return (
        rng.normal(size=(batch, FEATURES)).astype(np.float32),
        rng.normal(size=(batch, CLASSES)).astype(np.float32),
    )


def test_session_is_a_gradient_model_with_the_model_shapes(session: GradientSession) -> None:
    assert isinstance(session, GradientModel)
    assert session.input_shape == (FEATURES,)
    assert session.output_shape == (CLASSES,)
    assert session.input_name == "x"
    assert session.explained_name == "logits"
    assert session.provider in available_providers()
    assert set(session.weights) == {"W", "b"}


def test_call_returns_the_explained_tensor_and_vjp_per_sample(session: GradientSession) -> None:
    _, weight, bias = _linear_softmax()
    x, w = _batch(6)
    result = session(x, w)
    assert isinstance(result, GradientBatch)
    assert result.outputs.dtype == np.float32 and result.gradients.dtype == np.float32
    logits, gradient = _expected(x, w, weight, bias)
    np.testing.assert_allclose(result.outputs, logits, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(result.gradients, gradient, rtol=1e-5, atol=1e-6)
    # Per sample: one sample alone gives the same row as in the batch.
    single = session(x[2:3], w[2:3])
    np.testing.assert_allclose(single.gradients[0], result.gradients[2], rtol=1e-6, atol=1e-7)


def test_float64_inputs_are_cast(session: GradientSession) -> None:
    x, w = _batch(3)
    exact = session(x, w)
    cast = session(x.astype(np.float64), w.astype(np.float64))
    np.testing.assert_array_equal(cast.gradients, exact.gradients)


def test_weights_are_read_only_and_overrides_apply_for_one_call(session: GradientSession) -> None:
    _, weight, bias = _linear_softmax()
    np.testing.assert_array_equal(session.weights["W"], weight)
    with pytest.raises(ValueError):
        session.weights["W"][0, 0] = 1.0
    with pytest.raises(TypeError):
        session.weights["W"] = weight  # type: ignore[index]
    x, w = _batch(4)
    clean = session(x, w)
    doubled = session(x, w, weight_overrides={"W": 2.0 * session.weights["W"]})
    np.testing.assert_allclose(doubled.gradients, 2.0 * clean.gradients, rtol=1e-6, atol=1e-7)
    shifted = session(x, w, weight_overrides={"b": np.zeros(CLASSES, dtype=np.float64)})
    np.testing.assert_allclose(shifted.outputs, clean.outputs - bias, rtol=1e-5, atol=1e-6)
    again = session(x, w)
    np.testing.assert_array_equal(again.gradients, clean.gradients)


@pytest.mark.parametrize(
    ("inputs", "cotangents", "overrides", "message"),
    [
        (
            np.zeros((2, FEATURES + 1), np.float32),
            np.zeros((2, CLASSES), np.float32),
            None,
            r"inputs must have shape \('B', 5\), got \(2, 6\)",
        ),
        (
            np.zeros((2, FEATURES), np.int64),
            np.zeros((2, CLASSES), np.float32),
            None,
            "inputs must have a float dtype, got int64",
        ),
        (
            np.zeros((FEATURES,), np.float32),
            np.zeros((1, CLASSES), np.float32),
            None,
            r"inputs must have shape \('B', 5\), got \(5,\)",
        ),
        (
            np.zeros((0, FEATURES), np.float32),
            np.zeros((0, CLASSES), np.float32),
            None,
            "at least one sample",
        ),
        (
            np.zeros((2, FEATURES), np.float32),
            np.zeros((2, CLASSES + 1), np.float32),
            None,
            r"cotangents must have shape \('B', 3\), got \(2, 4\)",
        ),
        (
            np.zeros((2, FEATURES), np.float32),
            np.zeros((3, CLASSES), np.float32),
            None,
            r"batch size of inputs \(2\), got 3",
        ),
        (
            np.zeros((2, FEATURES), np.float32),
            np.zeros((2, CLASSES), np.float32),
            {"V": np.zeros(1)},
            "'V', which is not an overridable weight",
        ),
        (
            np.zeros((2, FEATURES), np.float32),
            np.zeros((2, CLASSES), np.float32),
            {"W": np.zeros((3, 5))},
            r"weight_overrides\['W'\] must have shape \(5, 3\), got \(3, 5\)",
        ),
        (
            np.zeros((2, FEATURES), np.float32),
            np.zeros((2, CLASSES), np.float32),
            {"b": np.zeros(3, np.int32)},
            r"weight_overrides\['b'\] must have a float dtype",
        ),
    ],
    ids=[
        "shape",
        "dtype",
        "no-batch",
        "empty",
        "cotangent-shape",
        "batch-mismatch",
        "unknown-weight",
        "weight-shape",
        "weight-dtype",
    ],
)
def test_call_validates_with_typed_errors(
    session: GradientSession,
    inputs: np.ndarray,
    cotangents: np.ndarray,
    overrides: dict[str, np.ndarray] | None,
    message: str,
) -> None:
    with pytest.raises(InvalidArgumentError, match=message):
        session(inputs, cotangents, overrides)


def test_run_outputs_runs_the_forward_part_only(session: GradientSession) -> None:
    _, weight, bias = _linear_softmax()
    x, _ = _batch(5)
    outputs = session.run_outputs(x)
    assert set(outputs) == {"probabilities", "logits"}
    logits, _ = _expected(x, np.zeros((5, CLASSES)), weight, bias)
    np.testing.assert_allclose(outputs["logits"], logits, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(outputs["probabilities"].sum(axis=1), 1.0, rtol=1e-6)
    with pytest.raises(InvalidArgumentError, match="inputs must have shape"):
        session.run_outputs(x[:, :2])


def test_loads_from_path_and_bytes(gradient_model: onnx.ModelProto, tmp_path: Path) -> None:
    path = tmp_path / "grad.onnx"
    path.write_bytes(gradient_model.SerializeToString())
    x, w = _batch(2)
    expected = GradientSession(gradient_model, device="cpu")(x, w).gradients
    for source in (path, str(path), gradient_model.SerializeToString()):
        np.testing.assert_array_equal(GradientSession(source, device="cpu")(x, w).gradients, expected)


def test_plain_and_broken_models_are_rejected(tmp_path: Path) -> None:
    plain, _, _ = _linear_softmax()
    with pytest.raises(InvalidModelError):
        GradientSession(plain)
    truncated = tmp_path / "truncated.onnx"
    data = build_gradient_model(plain, explained="logits").SerializeToString()
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(InvalidModelError):
        GradientSession(truncated)
    with pytest.raises(InvalidArgumentError, match="ModelProto, bytes or a path, got int"):
        GradientSession(3)  # type: ignore[arg-type]


def test_symbolic_instance_shape_is_a_clear_error() -> None:
    graph = helper.make_graph(
        [helper.make_node("Tanh", ["x"], ["y"])],
        "symbolic",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", "width"])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", "width"])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 10
    with pytest.raises(InvalidModelError, match="static"):
        GradientSession(build_gradient_model(model))
    pinned = GradientSession(build_gradient_model(model, input_shapes={"x": [4]}))
    assert pinned.input_shape == (4,)


def test_two_differentiated_inputs_need_an_input_name() -> None:
    graph = helper.make_graph(
        [helper.make_node("Mul", ["a", "b"], ["y"])],
        "two_inputs",
        [
            helper.make_tensor_value_info("a", TensorProto.FLOAT, ["batch", 3]),
            helper.make_tensor_value_info("b", TensorProto.FLOAT, ["batch", 3]),
        ],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 3])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 10
    gradient = build_gradient_model(model)
    with pytest.raises(
        InvalidArgumentError, match=r"input_name must pick one of the differentiated inputs \['a', 'b'\]"
    ):
        GradientSession(gradient)
    with pytest.raises(InvalidArgumentError, match="got 'c'"):
        GradientSession(gradient, input_name="c")
    # The other differentiated input cannot be fed through the one-input contract.
    with pytest.raises(InvalidModelError, match=r"needs the inputs \['b'\]"):
        GradientSession(gradient, input_name="a")


def test_device_choice() -> None:
    model = build_gradient_model(_linear_softmax()[0], explained="logits")
    with pytest.raises(InvalidArgumentError, match="device must be one of"):
        GradientSession(model, device="tpu")  # type: ignore[arg-type]
    assert available_providers()[-1] == CPU_PROVIDER
    if CUDA_PROVIDER in available_providers():
        assert GradientSession(model, device="cuda").provider == CUDA_PROVIDER
    else:
        with pytest.raises(DeviceUnavailableError, match="device='cuda'"):
            GradientSession(model, device="cuda")
        assert GradientSession(model, device="auto").provider == CPU_PROVIDER


def test_bytes_per_sample_counts_the_batch_sized_tensors() -> None:
    small = GradientSession(build_gradient_model(_linear_softmax(0, 5, 3)[0], explained="logits"))
    wide_model = build_gradient_model(_linear_softmax(0, 500, 3)[0], explained="logits")
    wide = GradientSession(wide_model)
    # At least x, tanh(x), the gradient (3 × features) and logits, probabilities, cotangent (3 × classes).
    assert small.bytes_per_sample >= 4 * (3 * 5 + 3 * 3)
    assert wide.bytes_per_sample >= 4 * (3 * 500 + 3 * 3)
    # Weights do not count: 500×3 of them would add 6000 bytes per tensor if they did.
    assert wide.bytes_per_sample < 4 * 20 * 500
    assert estimate_bytes_per_sample(wide_model, ["x", wide.metadata.cotangent]) == wide.bytes_per_sample


def test_bytes_per_sample_follows_tensor_lifetimes() -> None:
    # x -> Relu -> Relu -> ... (6 nodes): at most x, one intermediate and the next are alive at once.
    width = 10
    names = ["x", *[f"h{i}" for i in range(1, 6)], "y"]
    nodes = [helper.make_node("Relu", [a], [b]) for a, b in zip(names[:-1], names[1:], strict=True)]
    graph = helper.make_graph(
        nodes,
        "chain",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", width])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", width])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    assert estimate_bytes_per_sample(model, ["x"], headroom=1.0) == 3 * 4 * width
    assert estimate_bytes_per_sample(model, ["x"], headroom=1.5) == 3 * 4 * width * 3 // 2


def test_forward_session_and_forward_model() -> None:
    plain, weight, bias = _linear_softmax()
    forward = ForwardSession(plain, device="cpu")
    assert forward.input_names == ["x"] and forward.output_names == ["probabilities"]
    x, _ = _batch(3)
    probabilities = forward.run(x)["probabilities"]
    np.testing.assert_allclose(forward.run({"x": x})["probabilities"], probabilities)
    with pytest.raises(InvalidArgumentError, match=r"feed lacks the inputs \['x'\]"):
        forward.run({"z": x})
    pruned = forward_model(plain, ["logits"])
    assert [node.op_type for node in pruned.graph.node] == ["Tanh", "Gemm"]
    logits = ForwardSession(pruned).run(x)["logits"]
    np.testing.assert_allclose(
        logits, _expected(x, np.zeros((3, CLASSES)), weight, bias)[0], rtol=1e-5, atol=1e-6
    )
    with pytest.raises(InvalidModelError, match="not tensors of the graph"):
        forward_model(plain, ["nowhere"])


def test_overriding_a_weight_past_the_explained_tensor_changes_nothing() -> None:
    # logits = x @ W1; probabilities = Softmax(logits @ W2): W2 is off the path to the logits.
    rng = np.random.default_rng(3)
    w1 = rng.normal(size=(4, 3)).astype(np.float32)
    w2 = rng.normal(size=(3, 3)).astype(np.float32)
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["x", "W1"], ["logits"]),
            helper.make_node("MatMul", ["logits", "W2"], ["mixed"]),
            helper.make_node("Softmax", ["mixed"], ["probabilities"], axis=-1),
        ],
        "head",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["batch", 3])],
        [numpy_helper.from_array(w1, "W1"), numpy_helper.from_array(w2, "W2")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 10
    session = GradientSession(build_gradient_model(model, explained="logits"), device="cpu")
    assert set(session.weights) == {"W1", "W2"}
    x = rng.normal(size=(2, 4)).astype(np.float32)
    w = rng.normal(size=(2, 3)).astype(np.float32)
    clean = session(x, w)
    np.testing.assert_allclose(clean.gradients, w @ w1.T, rtol=1e-5, atol=1e-6)
    head = session(x, w, weight_overrides={"W2": np.zeros((3, 3), np.float32)})
    np.testing.assert_array_equal(head.gradients, clean.gradients)
    both = session(x, w, weight_overrides={"W1": -w1, "W2": np.zeros((3, 3), np.float32)})
    np.testing.assert_allclose(both.gradients, -clean.gradients, rtol=1e-6)
    np.testing.assert_allclose(session.run_outputs(x)["probabilities"].sum(axis=1), 1.0, rtol=1e-6)
