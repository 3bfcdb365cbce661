"""The gradient-graph builder's public API: loading, arguments, metadata, weights, errors, upgrades."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from models.gradient_graph import (
    BATCH_DIM,
    GradientGraphError,
    InvalidModelError,
    UnsupportedOpError,
    build_gradient_model,
    cotangent_name,
    gradient_name,
    load_model,
    read_gradient_metadata,
    supported_ops,
)
from tests.test_models import vjp_harness as h

F32 = TensorProto.FLOAT


def _mlp(opset: int = 17, dtype: int = F32) -> onnx.ModelProto:
    """x (N, 4) -> Gemm -> Relu -> Gemm = logits (N, 3) -> Softmax = probs."""
    np_dtype = helper.tensor_dtype_to_np_dtype(dtype)
    rng = np.random.default_rng(0)
    inits = {
        "w1": rng.standard_normal((5, 4)).astype(np_dtype),
        "b1": rng.standard_normal(5).astype(np_dtype),
        "w2": rng.standard_normal((3, 5)).astype(np_dtype),
        "b2": rng.standard_normal(3).astype(np_dtype),
    }
    nodes = [
        helper.make_node("Gemm", ["x", "w1", "b1"], ["h"], transB=1, name="fc1"),
        helper.make_node("Relu", ["h"], ["r"], name="relu"),
        helper.make_node("Gemm", ["r", "w2", "b2"], ["logits"], transB=1, name="fc2"),
        helper.make_node("Softmax", ["logits"], ["probs"], axis=1, name="softmax"),
    ]
    graph = helper.make_graph(
        nodes,
        "mlp",
        [helper.make_tensor_value_info("x", dtype, ["N", 4])],
        [helper.make_tensor_value_info("probs", dtype, ["N", 3])],
        initializer=[numpy_helper.from_array(v, k) for k, v in inits.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 10
    return model


def _x(n: int = 3, dtype: Any = np.float32) -> np.ndarray:
    return np.random.default_rng(1).standard_normal((n, 4)).astype(dtype)


# ------------------------------------------------------------------ signature and metadata


def test_gradient_model_signature_and_metadata() -> None:
    model = _mlp()
    out = build_gradient_model(model)
    onnx.checker.check_model(out)
    assert out.ir_version <= 10
    meta = read_gradient_metadata(out)
    assert meta.inputs == ["x"]
    assert meta.explained == "probs"
    assert meta.cotangent == cotangent_name("probs") == "mollify_cotangent__probs"
    assert meta.gradients == {"x": gradient_name("x")} == {"x": "mollify_gradient__x"}
    assert meta.weights == ["w1", "b1", "w2", "b2"]
    assert meta.opset == 17
    inputs = {v.name: v for v in out.graph.input}
    cot_dims = inputs[meta.cotangent].type.tensor_type.shape.dim
    assert [d.dim_param or d.dim_value for d in cot_dims] == [BATCH_DIM, 3]
    assert [o.name for o in out.graph.output] == ["probs", "mollify_gradient__x"]
    assert model.graph.output[0].name == "probs" and len(model.graph.output) == 1  # the input is not mutated


def test_read_gradient_metadata_of_a_plain_model_fails() -> None:
    with pytest.raises(InvalidModelError, match="not a gradient model"):
        read_gradient_metadata(_mlp())


def test_building_a_gradient_model_twice_is_refused() -> None:
    with pytest.raises(InvalidModelError, match="already"):
        build_gradient_model(build_gradient_model(_mlp()))


def test_supported_ops_lists_the_required_ones() -> None:
    required = {
        "Conv",
        "ConvTranspose",
        "Gemm",
        "MatMul",
        "MaxPool",
        "AveragePool",
        "Resize",
        "LayerNormalization",
        "Gelu",
        "Softmax",
    }
    assert required <= set(supported_ops())


# ------------------------------------------------------------------ what is explained and differentiated


def test_explaining_an_intermediate_tensor_adds_it_as_an_output() -> None:
    model = _mlp(dtype=TensorProto.DOUBLE)
    out = build_gradient_model(model, explained="logits")
    assert [o.name for o in out.graph.output] == ["probs", "logits", "mollify_gradient__x"]
    h.check_vjp(model, {"x": _x(dtype=np.float64)}, explained="logits")


def test_one_batched_run_gives_every_sample_its_own_gradient() -> None:
    model = _mlp()
    run = h.session(build_gradient_model(model, explained="logits"))
    x = _x(5)
    w = np.random.default_rng(2).standard_normal((5, 3)).astype(np.float32)
    batched = run.run(["mollify_gradient__x"], {"x": x, "mollify_cotangent__logits": w})[0]
    for i in range(5):
        single = run.run(
            ["mollify_gradient__x"], {"x": x[i : i + 1], "mollify_cotangent__logits": w[i : i + 1]}
        )[0]
        np.testing.assert_allclose(batched[i : i + 1], single, rtol=1e-6, atol=1e-7)


def test_multiple_differentiated_inputs() -> None:
    nodes = [
        helper.make_node("Mul", ["a", "b"], ["m"]),
        helper.make_node("Tanh", ["m"], ["t"]),
        helper.make_node("Add", ["t", "a"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes,
        "two",
        [
            helper.make_tensor_value_info("a", TensorProto.DOUBLE, ["N", 3]),
            helper.make_tensor_value_info("b", TensorProto.DOUBLE, ["N", 3]),
        ],
        [helper.make_tensor_value_info("y", TensorProto.DOUBLE, ["N", 3])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 10
    grads = h.check_vjp(model, {"a": h.randn(2, 3), "b": h.randn(2, 3, seed=2)})
    assert set(grads) == {"a", "b"}
    meta = read_gradient_metadata(build_gradient_model(model, ["b"]))
    assert meta.inputs == ["b"] and meta.gradients == {"b": "mollify_gradient__b"}


def test_an_input_that_does_not_reach_the_explained_tensor_gets_zeros() -> None:
    nodes = [helper.make_node("Tanh", ["a"], ["y"]), helper.make_node("Neg", ["b"], ["z"])]
    graph = helper.make_graph(
        nodes,
        "apart",
        [
            helper.make_tensor_value_info("a", F32, ["N", 2]),
            helper.make_tensor_value_info("b", F32, ["N", 2]),
        ],
        [
            helper.make_tensor_value_info("y", F32, ["N", 2]),
            helper.make_tensor_value_info("z", F32, ["N", 2]),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 10
    run = h.session(build_gradient_model(model))
    ones = np.ones((2, 2), np.float32)
    gb = run.run(["mollify_gradient__b"], {"a": ones, "b": ones, "mollify_cotangent__y": ones})[0]
    np.testing.assert_array_equal(gb, np.zeros((2, 2)))


# ------------------------------------------------------------------ weights


def test_weights_are_overridable_per_run_and_scaling_the_last_layer_doubles_the_gradient() -> None:
    model = _mlp()
    out = build_gradient_model(model, explained="logits")
    run = h.session(out)
    x, w = _x(), np.random.default_rng(3).standard_normal((3, 3)).astype(np.float32)
    feed = {"x": x, "mollify_cotangent__logits": w}
    clean = run.run(["mollify_gradient__x"], feed)[0]
    w2 = numpy_helper.to_array(next(t for t in model.graph.initializer if t.name == "w2"))
    doubled = run.run(["mollify_gradient__x"], {**feed, "w2": 2 * w2})[0]
    np.testing.assert_allclose(doubled, 2 * clean, rtol=1e-6, atol=1e-7)
    # the override lasts for one run only
    np.testing.assert_array_equal(run.run(["mollify_gradient__x"], feed)[0], clean)


@pytest.mark.parametrize("strides", [[1, 1], [2, 2]], ids=["flipped-kernel-conv", "conv-transpose"])
def test_overriding_a_conv_weight_changes_its_input_gradient(strides: list[int]) -> None:
    w = np.random.default_rng(7).standard_normal((3, 2, 3, 3)).astype(np.float32)
    model = h.one_op_model(
        "Conv",
        {"x": ["N", 2, 6, 6]},
        dtype=F32,
        attrs={"strides": strides, "pads": [1, 1, 1, 1]},
        initializers={"w": w},
    )
    run = h.session(build_gradient_model(model))
    x = np.random.default_rng(8).standard_normal((2, 2, 6, 6)).astype(np.float32)
    out = 6 // strides[0]
    feed = {
        "x": x,
        "mollify_cotangent__y": np.random.default_rng(9).standard_normal((2, 3, out, out)).astype(np.float32),
    }
    clean = run.run(["mollify_gradient__x"], feed)[0]
    other = np.random.default_rng(10).standard_normal(w.shape).astype(np.float32)
    np.testing.assert_allclose(
        run.run(["mollify_gradient__x"], {**feed, "w": 2 * w})[0], 2 * clean, rtol=1e-5, atol=1e-5
    )
    reference = h.session(
        build_gradient_model(
            h.one_op_model(
                "Conv",
                {"x": ["N", 2, 6, 6]},
                dtype=F32,
                attrs={"strides": strides, "pads": [1, 1, 1, 1]},
                initializers={"w": other},
            )
        )
    )
    np.testing.assert_allclose(
        run.run(["mollify_gradient__x"], {**feed, "w": other})[0],
        reference.run(["mollify_gradient__x"], feed)[0],
        rtol=1e-5,
        atol=1e-5,
    )


def test_expose_weights_false_keeps_weights_constant() -> None:
    out = build_gradient_model(_mlp(), expose_weights=False)
    assert read_gradient_metadata(out).weights == []
    assert {v.name for v in out.graph.input} == {"x", "mollify_cotangent__probs"}


def test_weights_stored_as_constant_nodes_behave_like_initializers() -> None:
    w = np.arange(6, dtype=np.float32).reshape(2, 3) / 6
    nodes = [
        helper.make_node("Constant", [], ["w"], value=numpy_helper.from_array(w)),
        helper.make_node("Constant", [], ["half"], value_float=0.5),
        helper.make_node("MatMul", ["x", "w"], ["m"]),
        helper.make_node("Mul", ["m", "half"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes,
        "paddle_like",
        [helper.make_tensor_value_info("x", F32, ["N", 2])],
        [helper.make_tensor_value_info("y", F32, ["N", 3])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 10
    out = build_gradient_model(model)
    assert read_gradient_metadata(out).weights == ["w"]  # a single number is not a weight
    run = h.session(out)
    feed = {"x": np.ones((1, 2), np.float32), "mollify_cotangent__y": np.ones((1, 3), np.float32)}
    np.testing.assert_allclose(
        run.run(["mollify_gradient__x"], feed)[0], 0.5 * w.sum(axis=1, keepdims=True).T
    )
    np.testing.assert_allclose(
        run.run(["mollify_gradient__x"], {**feed, "w": 3 * w})[0], 1.5 * w.sum(axis=1, keepdims=True).T
    )


# ------------------------------------------------------------------ old opsets and shapes


def _opset11_cnn() -> onnx.ModelProto:
    rng = np.random.default_rng(4)
    inits = {
        "w": rng.standard_normal((4, 1, 3, 3)).astype(np.float32),
        "fc": rng.standard_normal((10, 4 * 3 * 3)).astype(np.float32),
    }
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c"], ["r"]),
        helper.make_node("MaxPool", ["r"], ["p"], kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("Unsqueeze", ["p"], ["u"], axes=[1]),
        helper.make_node("Squeeze", ["u"], ["s"], axes=[1]),
        helper.make_node("Flatten", ["s"], ["f"]),
        helper.make_node("Gemm", ["f", "fc"], ["logits"], transB=1),
        helper.make_node("ReduceSum", ["logits"], ["total"], axes=[1], keepdims=1),
        helper.make_node("Sub", ["logits", "total"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes,
        "cnn11",
        [helper.make_tensor_value_info("x", F32, ["N", 1, 6, 6])],
        [helper.make_tensor_value_info("y", F32, ["N", 10])],
        initializer=[numpy_helper.from_array(v, k) for k, v in inits.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 11)])
    model.ir_version = 6
    return model


def test_an_opset_11_model_is_upgraded_and_differentiated() -> None:
    model = _opset11_cnn()
    out = build_gradient_model(model)
    assert read_gradient_metadata(out).opset == 17
    x = (np.random.default_rng(5).permutation(2 * 36).reshape(2, 1, 6, 6) * 0.1 - 3).astype(np.float32)
    # piecewise linear with well-spaced inputs: a 1e-2 step crosses no kink
    h.check_vjp(model, {"x": x}, eps=1e-2, tol=1e-3)


def test_spatial_sizes_must_be_pinned_for_conv_and_input_shapes_pins_them() -> None:
    w = np.random.default_rng(6).standard_normal((2, 1, 3, 3)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w"], ["y"], strides=[2, 2])],
        "free",
        [helper.make_tensor_value_info("x", F32, ["N", 1, "H", "W"])],
        [helper.make_tensor_value_info("y", F32, ["N", 2, "h", "w"])],
        initializer=[numpy_helper.from_array(w, "w")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 10
    with pytest.raises(GradientGraphError, match="input_shapes"):
        build_gradient_model(model)
    out = build_gradient_model(model, input_shapes={"x": (1, 8, 7)})
    dims = next(v for v in out.graph.input if v.name == "x").type.tensor_type.shape.dim
    assert [d.dim_param or d.dim_value for d in dims] == [BATCH_DIM, 1, 8, 7]
    h.check_vjp(
        model, {"x": h.randn(2, 1, 8, 7, dtype=np.float32)}, input_shapes={"x": (1, 8, 7)}, eps=0.5, tol=1e-4
    )


@pytest.mark.parametrize(
    ("shapes", "message"),
    [
        ({"x": (4, 1)}, "rank 2"),
        ({"x": (5,)}, "fixes it to 4"),
        ({"x": (0,)}, "positive ints"),
        ({"nope": (4,)}, "not a graph input"),
    ],
)
def test_bad_input_shapes_are_rejected(shapes: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidModelError, match=message):
        build_gradient_model(_mlp(), input_shapes=shapes)


# ------------------------------------------------------------------ errors


def test_unknown_explained_tensor() -> None:
    with pytest.raises(InvalidModelError, match="no tensor named 'nope'"):
        build_gradient_model(_mlp(), explained="nope")


def test_explained_tensor_that_does_not_depend_on_the_input() -> None:
    model = _mlp()
    model.graph.node.append(helper.make_node("Neg", ["w1"], ["negated_weights"]))
    with pytest.raises(InvalidModelError, match="does not depend"):
        build_gradient_model(model, explained="negated_weights")
    with pytest.raises(InvalidModelError, match="is an initializer"):
        build_gradient_model(model, explained="w1")


def test_non_float_input_is_rejected() -> None:
    graph = helper.make_graph(
        [helper.make_node("Cast", ["ids"], ["f"], to=F32), helper.make_node("Tanh", ["f"], ["y"])],
        "ints",
        [helper.make_tensor_value_info("ids", TensorProto.INT64, ["N", 3])],
        [helper.make_tensor_value_info("y", F32, ["N", 3])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 10
    with pytest.raises(InvalidModelError, match="'ids' has element type INT64, expected a float type"):
        build_gradient_model(model, ["ids"])
    with pytest.raises(InvalidModelError, match="no float graph input"):
        build_gradient_model(model)


@pytest.mark.parametrize(
    ("inputs", "message"),
    [(["w1"], "initializer"), (["x", "x"], "twice"), (["zz"], "not a graph input"), ([], "at least one")],
)
def test_bad_inputs_are_rejected(inputs: list[str], message: str) -> None:
    with pytest.raises(InvalidModelError, match=message):
        build_gradient_model(_mlp(), inputs)


def test_unsupported_op_on_the_path_names_op_node_opset_and_remedy() -> None:
    graph = helper.make_graph(
        [helper.make_node("Tanh", ["x"], ["t"]), helper.make_node("Det", ["t"], ["y"], name="the_det")],
        "det",
        [helper.make_tensor_value_info("x", F32, ["N", 3, 3])],
        [helper.make_tensor_value_info("y", F32, ["N"])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 10
    with pytest.raises(UnsupportedOpError) as caught:
        build_gradient_model(model)
    err = caught.value
    assert (err.op_type, err.node_name, err.domain, err.opset) == ("Det", "the_det", "ai.onnx", 17)
    assert (
        "Det" in str(err)
        and "the_det" in str(err)
        and "opset 17" in str(err)
        and "ask for the op" in str(err)
    )


def test_custom_domain_op_on_the_path_is_unsupported() -> None:
    graph = helper.make_graph(
        [helper.make_node("FusedThing", ["x"], ["y"], domain="com.example")],
        "custom",
        [helper.make_tensor_value_info("x", F32, ["N", 3])],
        [helper.make_tensor_value_info("y", F32, ["N", 3])],
    )
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.example", 1)]
    )
    model.ir_version = 10
    with pytest.raises(UnsupportedOpError, match=r"FusedThing .*domain com\.example, opset 1"):
        build_gradient_model(model, explained="y")


def test_unsupported_ops_off_the_path_are_fine() -> None:
    # ArgMax / Hardmax / TopK only feed outputs the explained tensor does not depend on.
    model = _mlp()
    model.graph.node.extend(
        [
            helper.make_node("ArgMax", ["probs"], ["label"], axis=1),
            helper.make_node("Hardmax", ["logits"], ["hard"]),
        ]
    )
    model.graph.output.extend(
        [
            helper.make_tensor_value_info("label", TensorProto.INT64, ["N", 1]),
            helper.make_tensor_value_info("hard", F32, ["N", 3]),
        ]
    )
    out = build_gradient_model(model, explained="logits")
    assert [o.name for o in out.graph.output][:3] == ["probs", "label", "hard"]


# ------------------------------------------------------------------ loading


def test_load_model_reads_files_and_bytes(tmp_path: Path) -> None:
    path = tmp_path / "model.onnx"
    onnx.save(_mlp(), path)
    assert load_model(path).graph.name == "mlp"
    assert load_model(str(path)).graph.name == "mlp"
    assert load_model(path.read_bytes()).graph.name == "mlp"


@pytest.mark.parametrize("fraction", [0.1, 0.5, 0.9, 0.99])
def test_truncated_model_file_is_a_clear_error(tmp_path: Path, fraction: float) -> None:
    data = _mlp().SerializeToString()
    path = tmp_path / "cut.onnx"
    path.write_bytes(data[: int(len(data) * fraction)])
    with pytest.raises(InvalidModelError, match="truncated"):
        load_model(path)


@pytest.mark.parametrize(
    ("content", "message"), [(b"", "empty"), (b"\x00\xff not onnx \xff" * 8, "not an ONNX model")]
)
def test_garbage_bytes_are_a_clear_error(content: bytes, message: str) -> None:
    with pytest.raises(InvalidModelError, match=message):
        load_model(content)


def test_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(InvalidModelError, match="does not exist"):
        load_model(tmp_path / "absent.onnx")


# ------------------------------------------------------------------ batch sizes baked into the model


def _reshaping_model(batch: int | str, target: list[int]) -> onnx.ModelProto:
    nodes = [
        helper.make_node("Reshape", ["x", "target"], ["r"]),
        helper.make_node("Tanh", ["r"], ["t"]),
        helper.make_node("Reshape", ["t", "back"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes,
        "fixed",
        [helper.make_tensor_value_info("x", TensorProto.DOUBLE, [batch, 4])],
        [helper.make_tensor_value_info("y", TensorProto.DOUBLE, [batch, 4])],
        initializer=[
            numpy_helper.from_array(np.array(target, dtype=np.int64), "target"),
            numpy_helper.from_array(np.array([-1, 4], dtype=np.int64), "back"),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 10
    return model


@pytest.mark.parametrize("target", [[1, 2, 2], [1, -1, 2]], ids=["no-wildcard", "leading-batch"])
def test_a_batch_size_fixed_by_reshape_constants_is_kept_and_reported(target: list[int]) -> None:
    # Legacy exports without a dynamic batch axis bake the batch into Reshape targets.
    model = _reshaping_model(1, target)
    out = build_gradient_model(model)
    assert read_gradient_metadata(out).batch_size == 1
    dims = next(v for v in out.graph.input if v.name == "x").type.tensor_type.shape.dim
    assert [d.dim_value for d in dims] == [1, 4]
    h.check_vjp(model, {"x": h.randn(1, 4)})


def test_a_dynamic_batch_with_a_batch_fixing_reshape_is_refused() -> None:
    with pytest.raises(InvalidModelError, match="dynamic batch axis"):
        build_gradient_model(_reshaping_model("N", [2, 2, 2]))


def test_a_reshape_keeping_the_batch_leaves_it_dynamic() -> None:
    out = build_gradient_model(_reshaping_model("N", [0, 2, 2]))
    assert read_gradient_metadata(out).batch_size is None
    h.check_vjp(_reshaping_model("N", [0, 2, 2]), {"x": h.randn(3, 4)})


# ------------------------------------------------------------------ when the opset upgrade fails


def _refuse_upgrades(monkeypatch: pytest.MonkeyPatch) -> None:
    def fail(model: onnx.ModelProto, target: int) -> onnx.ModelProto:
        raise RuntimeError("no adapter")

    monkeypatch.setattr(onnx.version_converter, "convert_version", fail)


def test_rules_follow_opset_11_semantics_when_the_upgrade_fails(monkeypatch: pytest.MonkeyPatch) -> None:
    _refuse_upgrades(monkeypatch)
    nodes = [
        helper.make_node("Unsqueeze", ["x"], ["u"], axes=[1]),
        helper.make_node("Softmax", ["u"], ["s"], axis=2),  # opset 11: over the flattened (3, 4)
        helper.make_node("Split", ["s"], ["a", "b"], axis=3, split=[1, 3]),
        helper.make_node("Concat", ["b", "a"], ["c"], axis=3),
        helper.make_node("ReduceSum", ["c"], ["r"], axes=[3], keepdims=0),
        helper.make_node("Squeeze", ["r"], ["y"], axes=[1]),
    ]
    graph = helper.make_graph(
        nodes,
        "old",
        [helper.make_tensor_value_info("x", TensorProto.DOUBLE, ["N", 3, 4])],
        [helper.make_tensor_value_info("y", TensorProto.DOUBLE, ["N", 3])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 11)])
    model.ir_version = 6
    assert read_gradient_metadata(build_gradient_model(model)).opset == 11
    h.check_vjp(model, {"x": h.randn(2, 3, 4)})


def test_overlapping_max_pool_needs_opset_16_when_the_upgrade_fails(monkeypatch: pytest.MonkeyPatch) -> None:
    _refuse_upgrades(monkeypatch)
    model = h.one_op_model(
        "MaxPool",
        {"x": ["N", 1, 5, 5]},
        attrs={"kernel_shape": [3, 3], "strides": [2, 2]},
        opset=11,
        dtype=F32,
    )
    with pytest.raises(UnsupportedOpError, match="opset 16"):
        build_gradient_model(model)
    non_overlapping = h.one_op_model(
        "MaxPool", {"x": ["N", 1, 6, 6]}, attrs={"kernel_shape": [2, 2], "strides": [2, 2]}, opset=11
    )
    h.check_vjp(non_overlapping, {"x": h.randn(2, 1, 6, 6)})


def test_a_model_below_opset_11_that_cannot_be_upgraded_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    _refuse_upgrades(monkeypatch)
    with pytest.raises(InvalidModelError, match="opset 9"):
        build_gradient_model(h.one_op_model("Relu", {"x": ["N", 3]}, opset=9))
