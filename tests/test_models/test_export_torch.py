"""models.export: torch → ONNX with a dynamic batch, the appended Softmax, the gradient pair."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from torch import nn

from models.export import (
    MAX_IR_VERSION,
    ExportError,
    append_softmax,
    export_torch_module,
    export_torch_onnx,
    gradient_path,
)


def _module(seed: int = 0) -> nn.Module:
    torch_generator = torch.Generator().manual_seed(seed)
    module = nn.Sequential(nn.Linear(6, 8), nn.Tanh(), nn.Linear(8, 3))
    with torch.no_grad():
        for parameter in module.parameters():
            parameter.copy_(torch.randn(parameter.shape, generator=torch_generator))
    return module


def _run(model: onnx.ModelProto, x: np.ndarray) -> list[np.ndarray]:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: x})


def _batch_dims(model: onnx.ModelProto) -> list[str]:
    values = [*model.graph.input, *model.graph.output]
    return [v.type.tensor_type.shape.dim[0].dim_param for v in values]


@pytest.mark.parametrize("dynamo", [True, False], ids=["dynamo", "legacy"])
def test_export_has_a_dynamic_batch_and_matches_torch(dynamo: bool) -> None:
    module = _module()
    example = torch.zeros(1, 6)
    model = export_torch_onnx(module, example, input_name="features", output_names=("scores",), dynamo=dynamo)
    onnx.checker.check_model(model)
    assert model.ir_version <= MAX_IR_VERSION
    assert [v.name for v in model.graph.input] == ["features"]
    assert [v.name for v in model.graph.output] == ["scores"]
    assert _batch_dims(model) == ["batch", "batch"]
    x = np.random.default_rng(1).normal(size=(5, 6)).astype(np.float32)
    (scores,) = _run(model, x)
    with torch.no_grad():
        expected = module(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(scores, expected, rtol=1e-5, atol=1e-6)


def test_export_restores_training_mode_and_rejects_bad_arguments() -> None:
    module = _module().train()
    export_torch_onnx(module, torch.zeros(2, 6), dynamo=False)
    assert module.training
    with pytest.raises(ExportError, match="float"):
        export_torch_onnx(module, torch.zeros(2, 6, dtype=torch.int64), dynamo=False)
    with pytest.raises(ExportError, match=r"torch.nn.Module, got function"):
        export_torch_onnx(lambda t: t, torch.zeros(2, 6))  # type: ignore[arg-type]
    with pytest.raises(ExportError, match="output_names"):
        export_torch_onnx(module, torch.zeros(2, 6), output_names=())


def test_append_softmax_keeps_logits_as_an_intermediate() -> None:
    module = _module(3)
    model = append_softmax(export_torch_onnx(module, torch.zeros(2, 6), dynamo=False))
    onnx.checker.check_model(model)
    assert [v.name for v in model.graph.output] == ["probabilities"]
    assert "logits" in {name for node in model.graph.node for name in node.output}
    x = np.random.default_rng(2).normal(size=(4, 6)).astype(np.float32)
    (probabilities,) = _run(model, x)
    with torch.no_grad():
        expected = torch.softmax(module(torch.from_numpy(x)), dim=-1).numpy()
    np.testing.assert_allclose(probabilities, expected, rtol=1e-5, atol=1e-7)
    with pytest.raises(ExportError, match="'scores'.*outputs are \\['probabilities'\\]"):
        append_softmax(model, logits="scores")


def test_export_torch_module_writes_the_plain_and_the_gradient_model(tmp_path: Path) -> None:
    from models.gradient_graph import read_gradient_metadata

    module = _module(4)
    target = tmp_path / "nested" / "model.onnx"
    original, gradient = export_torch_module(module, torch.zeros(2, 6), target, dynamo=False)
    assert gradient_path(target) == tmp_path / "nested" / "model.grad.onnx"
    assert onnx.load(target) == original
    assert onnx.load(gradient_path(target)) == gradient
    metadata = read_gradient_metadata(gradient)
    assert metadata.explained == "logits"
    assert list(metadata.gradients) == ["input"]
    assert gradient.ir_version <= MAX_IR_VERSION
    # One run gives J^T w per sample; compare with torch on a batch that is not the example's size.
    rng = np.random.default_rng(5)
    x = rng.normal(size=(3, 6)).astype(np.float32)
    w = rng.normal(size=(3, 3)).astype(np.float32)
    session = ort.InferenceSession(gradient.SerializeToString(), providers=["CPUExecutionProvider"])
    (grad,) = session.run([metadata.gradients["input"]], {"input": x, metadata.cotangent: w})
    xt = torch.from_numpy(x).requires_grad_(True)
    (expected,) = torch.autograd.grad(module(xt), xt, grad_outputs=torch.from_numpy(w))
    np.testing.assert_allclose(grad, expected.numpy(), rtol=1e-5, atol=1e-6)
