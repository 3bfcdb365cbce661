"""The finite-difference harness of ``vjp_harness.py`` accepts a right VJP rule and rejects a wrong one."""

from __future__ import annotations

from typing import Any

import onnx
import pytest

from tests.test_models.vjp_harness import check_vjp, one_op_model, randn


def test_harness_accepts_a_correct_rule() -> None:
    model = one_op_model("Tanh", {"x": ["N", 3]})
    grads = check_vjp(model, {"x": randn(2, 3)})
    assert grads["x"].shape == (2, 3)


def test_harness_rejects_a_wrong_rule(monkeypatch: pytest.MonkeyPatch) -> None:
    from models.gradient_graph.rules import registry

    def wrong_tanh(ctx: Any, node: onnx.NodeProto, grads: Any, wrt: Any) -> list[str | None]:
        return [grads[0]]  # forgets the 1 - y^2 factor

    monkeypatch.setitem(registry._RULES, ("", "Tanh"), wrong_tanh)
    model = one_op_model("Tanh", {"x": ["N", 3]})
    with pytest.raises(AssertionError):
        check_vjp(model, {"x": randn(2, 3)})
