"""Errors for real models the builder cannot differentiate: what fails, where, and what to do instead.

Loop and Scan reading the differentiated input, converted classical models (``ai.onnx.ml``),
integer inputs (token or byte classifiers), and opsets quoted as they are in the file.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import onnx
import onnx.utils
import pytest
from onnx import TensorProto, helper, numpy_helper

from models.gradient_graph import (
    InvalidModelError,
    UnsupportedOpError,
    build_gradient_model,
    load_model,
    read_gradient_metadata,
)
from models.runtime import GradientSession


def _model(graph: onnx.GraphProto, opset: int = 18, **domains: int) -> onnx.ModelProto:
    imports = [helper.make_opsetid("", opset)] + [
        helper.make_opsetid(d.replace("_", "."), v) for d, v in domains.items()
    ]
    model = helper.make_model(graph, opset_imports=imports)
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def _if_model() -> onnx.ModelProto:
    """``y = Relu(x) if sum(x) > 0 else -x``: both branches read x from the enclosing graph."""
    then_branch = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["then_y"])],
        "then",
        [],
        [helper.make_tensor_value_info("then_y", TensorProto.FLOAT, ["N", 4])],
    )
    else_branch = helper.make_graph(
        [helper.make_node("Neg", ["x"], ["else_y"])],
        "else",
        [],
        [helper.make_tensor_value_info("else_y", TensorProto.FLOAT, ["N", 4])],
    )
    graph = helper.make_graph(
        [
            helper.make_node("ReduceSum", ["x"], ["total"], keepdims=0),
            helper.make_node("Greater", ["total", "zero"], ["positive"]),
            helper.make_node(
                "If",
                ["positive"],
                ["y"],
                name="sign_branch",
                then_branch=then_branch,
                else_branch=else_branch,
            ),
        ],
        "if_model",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])],
        [numpy_helper.from_array(np.array(0.0, np.float32), "zero")],
    )
    return _model(graph)


def _loop_model() -> onnx.ModelProto:
    """``y = x + x + x``: a Loop whose body reads x from the enclosing graph."""
    body = helper.make_graph(
        [
            helper.make_node("Identity", ["cond_in"], ["cond_out"]),
            helper.make_node("Add", ["acc_in", "x"], ["acc_out"]),
        ],
        "body",
        [
            helper.make_tensor_value_info("i", TensorProto.INT64, []),
            helper.make_tensor_value_info("cond_in", TensorProto.BOOL, []),
            helper.make_tensor_value_info("acc_in", TensorProto.FLOAT, ["N", 4]),
        ],
        [
            helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []),
            helper.make_tensor_value_info("acc_out", TensorProto.FLOAT, ["N", 4]),
        ],
    )
    graph = helper.make_graph(
        [helper.make_node("Loop", ["two", "", "x"], ["y"], name="sum_loop", body=body)],
        "loop_model",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])],
        [numpy_helper.from_array(np.array(2, np.int64), "two")],
    )
    return _model(graph)


def _scan_model() -> onnx.ModelProto:
    """A running sum over x's rows with Scan (no rule either)."""
    body = helper.make_graph(
        [
            helper.make_node("Add", ["sum_in", "row"], ["sum_out"]),
            helper.make_node("Identity", ["sum_out"], ["scan_out"]),
        ],
        "body",
        [
            helper.make_tensor_value_info("sum_in", TensorProto.FLOAT, [4]),
            helper.make_tensor_value_info("row", TensorProto.FLOAT, [4]),
        ],
        [
            helper.make_tensor_value_info("sum_out", TensorProto.FLOAT, [4]),
            helper.make_tensor_value_info("scan_out", TensorProto.FLOAT, [4]),
        ],
    )
    graph = helper.make_graph(
        [
            helper.make_node(
                "Scan", ["zeros", "x"], ["total", "y"], name="running_sum", body=body, num_scan_inputs=1
            )
        ],
        "scan_model",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])],
        [numpy_helper.from_array(np.zeros(4, np.float32), "zeros")],
    )
    return _model(graph)


def test_loop_reading_the_input_is_an_unsupported_op_naming_the_node() -> None:
    with pytest.raises(UnsupportedOpError) as caught:
        build_gradient_model(_loop_model(), ["x"])
    error = caught.value
    assert (error.op_type, error.node_name) == ("Loop", "sum_loop")
    assert "its subgraphs read 'x'" in str(error) and "Loop and Scan bodies is not differentiated" in str(
        error
    )
    assert "identically zero" not in str(error)


def test_scan_over_the_input_is_an_unsupported_op_naming_the_node() -> None:
    with pytest.raises(UnsupportedOpError) as caught:
        build_gradient_model(_scan_model(), ["x"])
    error = caught.value
    assert (error.op_type, error.node_name) == ("Scan", "running_sum")
    assert "control flow has no gradient rule" in str(
        error
    ) and "Loop and Scan bodies is not differentiated" in str(error)


def test_if_after_the_explained_tensor_does_not_matter() -> None:
    """The check follows subgraph reads only on the path: explaining ``total`` skips the If."""
    graph = _if_model().graph
    graph.node[0].CopyFrom(helper.make_node("ReduceSum", ["x", "axes"], ["total"], keepdims=0))
    graph.initializer.append(numpy_helper.from_array(np.array([1], np.int64), "axes"))
    gradient = build_gradient_model(_model(graph), ["x"], "total")
    session = GradientSession(gradient, device="cpu")
    result = session(np.ones((2, 4), np.float32), np.array([1.0, 2.0], np.float32))
    np.testing.assert_allclose(result.gradients, [[1] * 4, [2] * 4])


def _sklearn_models() -> dict[str, onnx.ModelProto]:
    skl2onnx = pytest.importorskip("skl2onnx")
    from sklearn.linear_model import LogisticRegression
    from sklearn.tree import DecisionTreeClassifier

    rng = np.random.default_rng(0)
    x = rng.random((40, 4)).astype(np.float32)
    y = (x[:, 0] + x[:, 1] > 1).astype(np.int64)
    models = {}
    for estimator in (LogisticRegression(), DecisionTreeClassifier(max_depth=3)):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            models[type(estimator).__name__] = skl2onnx.to_onnx(
                estimator.fit(x, y), x[:1], options={"zipmap": False}
            )
    return models


@pytest.mark.parametrize(
    ("estimator", "op"),
    [("LogisticRegression", "LinearClassifier"), ("DecisionTreeClassifier", "TreeEnsembleClassifier")],
)
def test_a_model_importing_only_ai_onnx_ml_names_its_ops_and_the_way_out(estimator: str, op: str) -> None:
    model = _sklearn_models()[estimator]
    only_ml = [entry for entry in model.opset_import if entry.domain == "ai.onnx.ml"]
    del model.opset_import[:]
    model.opset_import.extend(only_ml)  # as older converters write it: nothing in the default domain
    model.ir_version = 8
    with pytest.raises(InvalidModelError) as caught:
        build_gradient_model(load_model(model.SerializeToString()))
    message = str(caught.value)
    assert f"{op} (ai.onnx.ml) node {op!r}" in message
    assert "underlying network" in message and "surrogate" in message and "MatMul + Add" in message


@pytest.mark.parametrize(
    ("estimator", "op"),
    [("LogisticRegression", "LinearClassifier"), ("DecisionTreeClassifier", "TreeEnsembleClassifier")],
)
def test_ai_onnx_ml_ops_beside_the_default_domain_get_the_same_advice(estimator: str, op: str) -> None:
    model = _sklearn_models()[estimator]
    model.ir_version = 8
    with pytest.raises(UnsupportedOpError) as caught:
        build_gradient_model(load_model(model.SerializeToString()), explained="probabilities")
    assert caught.value.op_type == op and caught.value.domain == "ai.onnx.ml"
    assert "surrogate" in str(caught.value) and "piecewise constant" in str(caught.value)


def _token_classifier() -> onnx.ModelProto:
    """``logits = mean_t(embedding[tokens[:, t]]) @ W``: int64 token ids, an embedding lookup."""
    rng = np.random.default_rng(1)
    graph = helper.make_graph(
        [
            helper.make_node("Gather", ["embedding", "tokens"], ["embedded"], axis=0, name="embed"),
            helper.make_node("ReduceMean", ["embedded", "axes"], ["pooled"], keepdims=0),
            helper.make_node("MatMul", ["pooled", "W"], ["logits"]),
        ],
        "tokens",
        [helper.make_tensor_value_info("tokens", TensorProto.INT64, ["N", 5])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 3])],
        [
            numpy_helper.from_array(rng.normal(size=(10, 4)).astype(np.float32), "embedding"),
            numpy_helper.from_array(np.array([1], np.int64), "axes"),
            numpy_helper.from_array(rng.normal(size=(4, 3)).astype(np.float32), "W"),
        ],
    )
    return _model(graph)


@pytest.mark.parametrize("inputs", [None, ["tokens"]])
def test_integer_inputs_name_the_float_tensor_to_explain_and_how(inputs: list[str] | None) -> None:
    with pytest.raises(InvalidModelError) as caught:
        build_gradient_model(_token_classifier(), inputs, "logits")
    message = str(caught.value)
    assert "'tokens' has element type INT64" in message
    assert "'embedded', the output of Gather node 'embed', the embedding lookup" in message
    assert (
        "onnx.utils.extract_model('model.onnx', 'cut.onnx', input_names=['embedded'], output_names=['logits'])"
        in message
    )
    assert "--input embedded --shape embedded=5x4" in message and "\"input_name\": 'embedded'" in message


def test_the_advised_cut_really_works(tmp_path: Path) -> None:
    """Follow the advice: cut at the embedding output, differentiate with respect to it."""
    onnx.save_model(_token_classifier(), tmp_path / "model.onnx")
    onnx.utils.extract_model(
        str(tmp_path / "model.onnx"), str(tmp_path / "cut.onnx"), ["embedded"], ["logits"]
    )
    cut = load_model(tmp_path / "cut.onnx")
    gradient = build_gradient_model(cut, ["embedded"], "logits", input_shapes={"embedded": (5, 4)})
    session = GradientSession(gradient, device="cpu")
    W = numpy_helper.to_array(next(t for t in cut.graph.initializer if t.name == "W"))
    result = session(np.zeros((1, 5, 4), np.float32), np.array([[1.0, 0.0, 0.0]], np.float32))
    np.testing.assert_allclose(result.gradients[0], np.repeat(W[:, 0][None] / 5, 5, axis=0), rtol=1e-6)
    assert read_gradient_metadata(gradient).inputs == ["embedded"]


def _determinant_model(opset: int) -> onnx.ModelProto:
    """``logits = Det(reshape(x, 2x2))``: Det has no gradient rule."""
    graph = helper.make_graph(
        [
            helper.make_node("Reshape", ["x", "shape"], ["square"]),
            helper.make_node("Det", ["square"], ["det"], name="det"),
            helper.make_node("Unsqueeze", ["det"], ["logits"], axes=[1]),
        ],
        "det",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 1])],
        [numpy_helper.from_array(np.array([-1, 2, 2], np.int64), "shape")],
    )
    return _model(graph, opset=opset)


def test_errors_quote_the_opset_of_the_file_not_the_upgraded_one() -> None:
    with pytest.raises(UnsupportedOpError) as caught:
        build_gradient_model(_determinant_model(12), ["x"])
    assert caught.value.opset == 12 and caught.value.upgraded_to == 17
    assert "(domain ai.onnx, opset 12 in the model file, upgraded to 17 to differentiate)" in str(
        caught.value
    )


def test_errors_of_a_model_not_upgraded_quote_its_opset_alone() -> None:
    model = _determinant_model(12)
    model.graph.node[2].CopyFrom(helper.make_node("Unsqueeze", ["det", "axes"], ["logits"]))
    model.graph.initializer.append(numpy_helper.from_array(np.array([1], np.int64), "axes"))
    model.opset_import[0].version = 18
    with pytest.raises(UnsupportedOpError) as caught:
        build_gradient_model(model, ["x"])
    assert caught.value.opset == 18 and caught.value.upgraded_to is None
    assert "(domain ai.onnx, opset 18 in the model file)" in str(caught.value)
