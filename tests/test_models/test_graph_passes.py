"""Graph passes: the builder runs whatever passes are registered, and only those.

A pass replaces the VJP rule of chosen nodes (``models.gradient_graph.passes``). The tests
register a real one, guided backpropagation's ReLU (Springenberg, Dosovitskiy, Brox and
Riedmiller, "Striving for Simplicity: The All Convolutional Net", 2015), and take the built-in
pooled ReLU mask out, checking the gradients against NumPy and the graphs against the builds
without the change.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from models.gradient_graph import build_gradient_model, cotangent_name, gradient_name
from models.gradient_graph.context import VjpContext
from models.gradient_graph.passes import (
    ActiveGraph,
    RuleRewrite,
    register_pass,
    registered_passes,
    unregister_pass,
)
from models.gradient_graph.rules.common import output_grad
from models.gradient_graph.rules.registry import VjpRule
from tests.test_models import vjp_harness as h


@pytest.fixture(autouse=True)
def restore_passes() -> Iterator[None]:
    """Put the registry back as it was (same passes, same order), whatever a test did to it."""
    saved = registered_passes()
    yield
    for graph_pass in registered_passes():
        unregister_pass(graph_pass.name)
    for graph_pass in saved:
        register_pass(graph_pass)


def _positive_gradient_first(rule: VjpRule) -> VjpRule:
    def guided(
        ctx: VjpContext, node: onnx.NodeProto, grads: Sequence[str | None], wrt: Sequence[bool]
    ) -> Sequence[str | None]:
        g = output_grad(grads)
        positive = ctx.mask(ctx.op("Greater", [g, ctx.scalar(0.0, g)]), g)
        return rule(ctx, node, [ctx.op("Mul", [g, positive])], wrt)

    return guided


class GuidedRelu:
    """Guided backpropagation: a ReLU passes only positive gradients, then applies its own mask."""

    name = "test-guided-relu"

    def apply(self, graph: ActiveGraph) -> Iterable[tuple[onnx.NodeProto, RuleRewrite]]:
        return [(node, _positive_gradient_first) for node in graph.nodes if node.op_type == "Relu"]


def _mlp() -> tuple[onnx.ModelProto, dict[str, np.ndarray]]:
    """x (N, 4) -> Gemm -> Relu -> Gemm = logits (N, 3), in float64."""
    rng = np.random.default_rng(0)
    weights = {
        "w1": rng.standard_normal((6, 4)),
        "b1": rng.standard_normal(6),
        "w2": rng.standard_normal((3, 6)),
        "b2": rng.standard_normal(3),
    }
    nodes = [
        helper.make_node("Gemm", ["x", "w1", "b1"], ["h"], transB=1, name="fc1"),
        helper.make_node("Relu", ["h"], ["r"], name="relu"),
        helper.make_node("Gemm", ["r", "w2", "b2"], ["logits"], transB=1, name="fc2"),
    ]
    graph = helper.make_graph(
        nodes,
        "mlp",
        [helper.make_tensor_value_info("x", TensorProto.DOUBLE, ["N", 4])],
        [helper.make_tensor_value_info("logits", TensorProto.DOUBLE, ["N", 3])],
        initializer=[numpy_helper.from_array(v, k) for k, v in weights.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 10
    return model, weights


def _gradient(gradient_model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> np.ndarray:
    """The gradient of input ``x`` for ``feeds`` (``x`` and the cotangent)."""
    return np.asarray(h.session(gradient_model).run([gradient_name("x")], feeds)[0])


def _serialized(model: onnx.ModelProto) -> bytes:
    return model.SerializeToString(deterministic=True)


def test_a_registered_pass_rewrites_the_gradient_and_unregistering_it_restores_the_graph() -> None:
    model, w = _mlp()
    rng = np.random.default_rng(1)
    x = rng.standard_normal((5, 4))
    cot = rng.standard_normal((5, 3))
    feeds = {"x": x, cotangent_name("logits"): cot}
    h_pre = x @ w["w1"].T + w["b1"]
    g_r = cot @ w["w2"]
    plain = (g_r * (h_pre > 0)) @ w["w1"]
    guided = (g_r * (g_r > 0) * (h_pre > 0)) @ w["w1"]
    assert not np.allclose(plain, guided)  # the cotangent has negative gradients at live units

    before = build_gradient_model(model, ["x"], "logits")
    np.testing.assert_allclose(_gradient(before, feeds), plain, rtol=1e-12, atol=1e-12)

    register_pass(GuidedRelu())
    assert [p.name for p in registered_passes()][-1] == "test-guided-relu"
    rewritten = build_gradient_model(model, ["x"], "logits")
    np.testing.assert_allclose(_gradient(rewritten, feeds), guided, rtol=1e-12, atol=1e-12)

    unregister_pass("test-guided-relu")
    after = build_gradient_model(model, ["x"], "logits")
    assert _serialized(after) == _serialized(before)
    np.testing.assert_array_equal(_gradient(after, feeds), _gradient(before, feeds))


def _relu_pool() -> onnx.ModelProto:
    """x (N, 2, 4, 4) -> Relu = r -> MaxPool 2×2 = pooled (N, 2, 2, 2), in float32."""
    nodes = [
        helper.make_node("Relu", ["x"], ["r"], name="relu"),
        helper.make_node("MaxPool", ["r"], ["pooled"], kernel_shape=[2, 2], strides=[2, 2], name="pool"),
    ]
    graph = helper.make_graph(
        nodes,
        "relu_pool",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 2, 4, 4])],
        [helper.make_tensor_value_info("pooled", TensorProto.FLOAT, ["N", 2, 2, 2])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 10
    return model


def _masked(model: onnx.ModelProto) -> set[str]:
    """The forward tensors the gradient graph compares with zero (where ReLU masks are taken)."""
    return {node.input[0] for node in model.graph.node if node.op_type == "Greater"}


def test_the_pooled_relu_mask_is_a_registered_pass_that_moves_the_mask_to_the_pooled_side() -> None:
    assert "pooled-relu-mask" in [p.name for p in registered_passes()]
    model = _relu_pool()
    rng = np.random.default_rng(2)
    feeds = {
        "x": rng.standard_normal((3, 2, 4, 4)).astype(np.float32),
        cotangent_name("pooled"): rng.standard_normal((3, 2, 2, 2)).astype(np.float32),
    }
    with_pass = build_gradient_model(model, ["x"], "pooled")
    assert _masked(with_pass) == {"pooled"}

    unregister_pass("pooled-relu-mask")
    without = build_gradient_model(model, ["x"], "pooled")
    assert _masked(without) == {"r"}
    # Multiplying by a 0/1 mask before or after routing the gradient gives the same numbers.
    np.testing.assert_array_equal(_gradient(with_pass, feeds), _gradient(without, feeds))


def test_pass_names_are_unique_and_unknown_names_are_named() -> None:
    register_pass(GuidedRelu())
    with pytest.raises(ValueError, match="'test-guided-relu' is registered already"):
        register_pass(GuidedRelu())
    unregister_pass("test-guided-relu")
    with pytest.raises(ValueError, match=r"no graph pass named 'test-guided-relu'.*'pooled-relu-mask'"):
        unregister_pass("test-guided-relu")
