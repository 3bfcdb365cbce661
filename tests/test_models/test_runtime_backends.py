"""models.runtime's backend seam: a second backend (onnx's pure-Python reference evaluator,
:mod:`tests.test_models.reference_backend`) runs the same gradient graphs as ONNX Runtime through
:class:`models.runtime.backend.Backend`, and the graph / memory / batching modules stay free of
onnxruntime.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from estimator import explain
from estimator.errors import InvalidArgumentError, ModelEvaluationError
from estimator.method import Method
from models.gradient_graph import build_gradient_model
from models.runtime import Backend, BackendModel, ForwardSession, GradientSession
from tests.test_models.reference_backend import ReferenceBackend

ROOT = Path(__file__).resolve().parents[2]


# --------------------------------------------------------------------------- models


def _conv_model(seed: int = 0) -> onnx.ModelProto:
    """``logits = Gemm(Flatten(Relu(Conv(x)))) `` on ``(B, 2, 5, 5)``, then a Softmax head."""
    rng = np.random.default_rng(seed)
    graph = helper.make_graph(
        [
            helper.make_node("Conv", ["x", "K"], ["conv"], pads=[1, 1, 1, 1]),
            helper.make_node("Relu", ["conv"], ["relu"]),
            helper.make_node("Flatten", ["relu"], ["flat"]),
            helper.make_node("Gemm", ["flat", "W", "b"], ["logits"]),
            helper.make_node("Softmax", ["logits"], ["probabilities"], axis=-1),
        ],
        "conv",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 2, 5, 5])],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["batch", 4])],
        [
            numpy_helper.from_array(rng.normal(size=(3, 2, 3, 3)).astype(np.float32), "K"),
            numpy_helper.from_array(rng.normal(size=(3 * 5 * 5, 4)).astype(np.float32) / 5, "W"),
            numpy_helper.from_array(rng.normal(size=(4,)).astype(np.float32), "b"),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 10
    return model


@pytest.fixture(scope="module")
def gradient() -> onnx.ModelProto:
    return build_gradient_model(_conv_model(), explained="logits", expose_weights=True)


def _pair(gradient: onnx.ModelProto) -> tuple[GradientSession, GradientSession, ReferenceBackend]:
    backend = ReferenceBackend()
    return GradientSession(gradient, device="cpu"), GradientSession(gradient, backend=backend), backend


# --------------------------------------------------------------------------- tests


def test_the_reference_backend_satisfies_the_interface() -> None:
    backend = ReferenceBackend()
    assert isinstance(backend, Backend)
    assert isinstance(backend.open(_conv_model()), BackendModel)


def test_gradients_outputs_and_overrides_agree_with_onnx_runtime(gradient: onnx.ModelProto) -> None:
    ort_session, reference, backend = _pair(gradient)
    assert reference.backend is backend and reference.provider == "onnx.reference"
    assert reference.input_shape == ort_session.input_shape == (2, 5, 5)
    assert reference.output_shape == ort_session.output_shape == (4,)
    assert not reference.io_binding
    rng = np.random.default_rng(3)
    x = rng.normal(size=(6, 2, 5, 5)).astype(np.float32)
    w = rng.normal(size=(6, 4)).astype(np.float32)
    expected, got = ort_session(x, w), reference(x, w)
    np.testing.assert_allclose(got.outputs, expected.outputs, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(got.gradients, expected.gradients, rtol=1e-5, atol=1e-5)
    assert np.abs(got.gradients).max() > 0.1  # a real gradient, not zeros on both sides
    overrides = {name: value * 1.5 for name, value in reference.weights.items()}
    expected, got = ort_session(x, w, overrides), reference(x, w, overrides)
    np.testing.assert_allclose(got.gradients, expected.gradients, rtol=1e-5, atol=1e-5)
    assert not np.allclose(got.gradients, reference(x, w).gradients)
    # The clean forward (every original output, the Softmax head too) runs on the same backend.
    forward_expected, forward_got = ort_session.run_outputs(x), reference.run_outputs(x)
    assert set(forward_got) == {"probabilities", "logits"}
    for name, value in forward_expected.items():
        np.testing.assert_allclose(forward_got[name], value, rtol=1e-5, atol=1e-6)
    # Clean graph, override graph, forward graph: every one opened by the reference backend.
    assert len(backend.opened) == 3 and all(model.runs for model in backend.opened)


@pytest.mark.parametrize(
    "method",
    [Method(samples=24, alpha=0.2), Method(mode="parameter", weight_draws=4, weight_sigma=0.1)],
    ids=["smoothgrad", "noisegrad"],
)
def test_attributions_agree_with_onnx_runtime(gradient: onnx.ModelProto, method: Method) -> None:
    ort_session, reference, _ = _pair(gradient)
    instance = np.random.default_rng(5).normal(size=(2, 5, 5)).astype(np.float32)
    runs = [
        explain(session, instance, method, lower=-3.0, upper=3.0, seed=11)
        for session in (ort_session, reference)
    ]
    np.testing.assert_allclose(runs[1].attribution, runs[0].attribution, rtol=1e-4, atol=1e-5)
    assert np.abs(runs[0].attribution).max() > 0


def test_a_fixed_batch_model_is_split_into_padded_calls_on_any_backend() -> None:
    model = _conv_model(seed=1)
    for value in [*model.graph.input, *model.graph.output]:
        value.type.tensor_type.shape.dim[0].dim_value = 4
    # A per-row offset baked into the graph: the batch cannot be made symbolic, it stays 4 rows.
    gemm = next(node for node in model.graph.node if node.op_type == "Gemm")
    gemm.output[0] = "scores"
    model.graph.node.insert(
        list(model.graph.node).index(gemm) + 1, helper.make_node("Add", ["scores", "rows"], ["logits"])
    )
    model.graph.initializer.append(
        numpy_helper.from_array(np.arange(16, dtype=np.float32).reshape(4, 4), "rows")
    )
    gradient = build_gradient_model(model, ["x"], explained="logits")
    ort_session, reference, backend = _pair(gradient)
    assert reference.fixed_batch_size == 4
    rng = np.random.default_rng(8)
    x = rng.normal(size=(10, 2, 5, 5)).astype(np.float32)
    w = rng.normal(size=(10, 4)).astype(np.float32)
    np.testing.assert_allclose(reference(x, w).gradients, ort_session(x, w).gradients, rtol=1e-5, atol=1e-5)
    assert backend.opened[0].runs == 3  # 4 + 4 + 2 padded to 4


def test_a_forward_session_runs_on_the_reference_backend() -> None:
    model = _conv_model()
    x = np.random.default_rng(2).normal(size=(3, 2, 5, 5)).astype(np.float32)
    expected = ForwardSession(model, device="cpu").run(x)
    forward = ForwardSession(model, backend=ReferenceBackend())
    assert forward.output_names == ["probabilities"] and forward.provider == "onnx.reference"
    np.testing.assert_allclose(
        forward.run(x)["probabilities"], expected["probabilities"], rtol=1e-5, atol=1e-6
    )


def test_backend_failures_and_conflicting_arguments_are_clear(gradient: onnx.ModelProto) -> None:
    with pytest.raises(InvalidArgumentError, match="configure the backend itself"):
        GradientSession(gradient, backend=ReferenceBackend(), device="cpu")
    reference = GradientSession(gradient, backend=ReferenceBackend())
    x = np.zeros((1, 2, 5, 5), np.float32)
    reference.backend.opened[0]._evaluator = None  # type: ignore[attr-defined]  # a backend that breaks mid-run
    with pytest.raises(ModelEvaluationError, match="onnx.reference failed to run the gradient graph"):
        reference(x, np.ones((1, 4), np.float32))


def test_graph_memory_and_batching_modules_never_import_onnxruntime() -> None:
    code = (
        "import sys\n"
        "import numpy as np\n"
        "from onnx import TensorProto, helper, numpy_helper\n"
        "import models.runtime\n"
        "from models.runtime import backend, batches, graph, memory\n"
        "from models.gradient_graph import build_gradient_model\n"
        "g = helper.make_graph([helper.make_node('MatMul', ['x', 'W'], ['y'])], 'g',\n"
        "    [helper.make_tensor_value_info('x', TensorProto.FLOAT, ['batch', 3])],\n"
        "    [helper.make_tensor_value_info('y', TensorProto.FLOAT, ['batch', 2])],\n"
        "    [numpy_helper.from_array(np.ones((3, 2), np.float32), 'W')])\n"
        "model = build_gradient_model(helper.make_model(g, opset_imports=[helper.make_opsetid('', 18)]))\n"
        "pruned = graph.forward_model(model, ['y'])\n"
        "assert memory.estimate_bytes_per_sample(pruned, ['x']) > 0\n"
        "loaded = sorted(name for name in sys.modules if name.split('.')[0] == 'onnxruntime')\n"
        "assert not loaded, loaded\n"
        "from models.runtime import GradientSession\n"
        "assert 'onnxruntime' in sys.modules\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
