"""Models exported without a dynamic batch axis: run fixed-size batches, or made symbolic where checked.

``torch.onnx.export`` without ``dynamic_axes`` / ``dynamic_shapes`` declares the example's batch
size and often bakes it into Reshape constants; such a gradient model used to fail in ONNX Runtime
(``Got invalid dimensions ... Got: 2 Expected: 1``) as soon as a chunk held two rows. Every
result here is compared with PyTorch autograd or with the dynamically exported model.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

from estimator import Method, explain
from models.export import export_torch_onnx
from models.gradient_graph import build_gradient_model, load_model, read_gradient_metadata
from models.gradify import gradify
from models.runtime import GradientSession

SHAPE = (3, 8, 8)


class ViewCnn(torch.nn.Module):
    """Conv → ReLU → ``view(batch, -1)`` → Linear: exporters turn the view into a constant Reshape."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = torch.nn.Conv2d(3, 4, 3)
        self.fc = torch.nn.Linear(4 * 6 * 6, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.tanh(self.conv(x))
        return self.fc(h.view(x.size(0), -1))


class FlattenCnn(ViewCnn):
    """Like :class:`ViewCnn` with ``flatten(1)``: the legacy exporter writes a batch-agnostic Flatten."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.tanh(self.conv(x)).flatten(1))


def _export(module: torch.nn.Module, batch: int, folder: Path, *, dynamo: bool) -> Path:
    """``torch.onnx.export`` with its defaults (no dynamic axes): the batch is fixed to ``batch``."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "model.onnx"
    example = torch.rand(batch, *SHAPE)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module.eval(), (example,), str(path), dynamo=dynamo)
    return path


def _torch_vjp(module: torch.nn.Module, x: np.ndarray, cotangent: np.ndarray) -> np.ndarray:
    """``J^T · cotangent`` per row by autograd, one row at a time (the exported batch is 1)."""
    rows = []
    for xi, wi in zip(x, cotangent, strict=True):
        xt = torch.tensor(xi[None], requires_grad=True)
        (module(xt) * torch.tensor(wi[None])).sum().backward()
        assert xt.grad is not None
        rows.append(xt.grad.numpy()[0])
    return np.stack(rows)


@pytest.fixture(scope="module")
def exports(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("fixed-batch")
    net = ViewCnn()
    return {
        "dynamo-1": _export(net, 1, root / "dynamo-1", dynamo=True),
        "legacy-1": _export(net, 1, root / "legacy-1", dynamo=False),
        "dynamo-2": _export(net, 2, root / "dynamo-2", dynamo=True),
    }


@pytest.fixture(scope="module")
def dynamic_session(tmp_path_factory: pytest.TempPathFactory) -> GradientSession:
    """The same network exported with a dynamic batch axis: the reference for explanations."""
    model = export_torch_onnx(ViewCnn(), torch.rand(2, *SHAPE), input_name="x")
    gradient = build_gradient_model(model, ["x"], input_shapes={"x": SHAPE})
    assert read_gradient_metadata(gradient).batching == "dynamic"
    return GradientSession(gradient, device="cpu")


@pytest.mark.parametrize(("name", "size"), [("dynamo-1", 1), ("legacy-1", 1), ("dynamo-2", 2)])
def test_fixed_batch_exports_run_any_number_of_rows(
    exports: dict[str, Path], tmp_path: Path, name: str, size: int
) -> None:
    out = tmp_path / "model.grad.onnx"
    metadata = gradify(exports[name], out, shapes={load_model(exports[name]).graph.input[0].name: SHAPE})
    session = GradientSession(out, device="cpu")
    rng = np.random.default_rng(1)
    x = rng.random((5, *SHAPE), dtype=np.float32)
    cotangent = rng.normal(size=(5, 5)).astype(np.float32)
    result = session(x, cotangent)  # 5 rows: several calls, the last one padded when size is 2
    expected = _torch_vjp(ViewCnn().eval(), x, cotangent)
    np.testing.assert_allclose(result.gradients, expected, rtol=1e-4, atol=1e-5)
    with torch.no_grad():
        np.testing.assert_allclose(
            result.outputs, ViewCnn().eval()(torch.tensor(x)).numpy(), rtol=1e-4, atol=1e-5
        )
    outputs = session.run_outputs(x)
    assert all(value.shape[0] == 5 for value in outputs.values())
    assert (metadata.batching, metadata.batch_size) == ("fixed", size)
    assert (session.batching, session.fixed_batch_size) == ("fixed", size)


@pytest.mark.parametrize("name", ["dynamo-1", "legacy-1", "dynamo-2"])
def test_smoothgrad_on_a_fixed_batch_export_matches_the_dynamic_export(
    exports: dict[str, Path], dynamic_session: GradientSession, tmp_path: Path, name: str
) -> None:
    out = tmp_path / "model.grad.onnx"
    gradify(exports[name], out, shapes={load_model(exports[name]).graph.input[0].name: SHAPE})
    fixed = GradientSession(out, device="cpu")
    x = np.random.default_rng(2).random(SHAPE, dtype=np.float32)
    method = Method(samples=6)
    got = explain(fixed, x, method, lower=0.0, upper=1.0, seed=11, chunk_size=4)
    want = explain(dynamic_session, x, method, lower=0.0, upper=1.0, seed=11, chunk_size=4)
    assert got.extras["chunk_rows"] == 4
    np.testing.assert_allclose(got.attribution, want.attribution, rtol=1e-4, atol=1e-6)


def test_a_static_batch_that_the_graph_does_not_bake_in_is_made_symbolic(tmp_path: Path) -> None:
    path = _export(FlattenCnn(), 1, tmp_path / "legacy-flatten", dynamo=False)
    model = load_model(path)
    name = model.graph.input[0].name
    assert model.graph.input[0].type.tensor_type.shape.dim[0].dim_value == 1
    gradient = build_gradient_model(model, [name], input_shapes={name: SHAPE})
    metadata = read_gradient_metadata(gradient)
    assert (metadata.batching, metadata.batch_size) == ("symbolic", None)
    assert gradient.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"
    session = GradientSession(gradient, device="cpu")
    x = np.random.default_rng(3).random((3, *SHAPE), dtype=np.float32)
    w = np.random.default_rng(4).normal(size=(3, 5)).astype(np.float32)
    np.testing.assert_allclose(
        session(x, w).gradients, _torch_vjp(FlattenCnn().eval(), x, w), rtol=1e-4, atol=1e-5
    )


def _class_token_model() -> onnx.ModelProto:
    """``y = ReduceMean(Concat(cls, x), axis 1) @ W``, exported for batch 1: ``cls`` is ``[1, 1, 4]``.

    No Reshape bakes the batch in, but the Concat only works at batch 1 (a transformer's class
    token, expanded to the export batch and folded into a constant): the builder must see it.
    """
    rng = np.random.default_rng(5)
    graph = helper.make_graph(
        [
            helper.make_node("Concat", ["cls", "x"], ["tokens"], axis=1, name="add_class_token"),
            helper.make_node("ReduceMean", ["tokens", "axes"], ["pooled"], keepdims=0),
            helper.make_node("MatMul", ["pooled", "W"], ["logits"]),
        ],
        "class_token",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 4])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 2])],
        [
            numpy_helper.from_array(rng.normal(size=(1, 1, 4)).astype(np.float32), "cls"),
            numpy_helper.from_array(np.array([1], np.int64), "axes"),
            numpy_helper.from_array(rng.normal(size=(4, 2)).astype(np.float32), "W"),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 10
    return model


def test_a_batch_baked_in_elsewhere_than_a_reshape_is_detected_and_kept_fixed() -> None:
    model = _class_token_model()
    gradient = build_gradient_model(model, ["x"])
    metadata = read_gradient_metadata(gradient)
    assert (metadata.batching, metadata.batch_size) == ("fixed", 1)
    session = GradientSession(gradient, device="cpu")
    rng = np.random.default_rng(6)
    x = rng.normal(size=(3, 3, 4)).astype(np.float32)
    w = rng.normal(size=(3, 2)).astype(np.float32)
    result = session(x, w)
    weights = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    # logits = mean over 4 tokens (cls + 3 rows of x) @ W: d/dx = (w @ W.T) / 4 for each of x's rows.
    expected = np.repeat((w @ weights["W"].T)[:, None, :] / 4, 3, axis=1)
    np.testing.assert_allclose(result.gradients, expected, rtol=1e-5, atol=1e-6)
    tokens = np.concatenate([np.repeat(weights["cls"], 3, axis=0), x], axis=1)
    np.testing.assert_allclose(result.outputs, tokens.mean(axis=1) @ weights["W"], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", ["dynamo-1", "dynamo-2"])
def test_fixed_batch_memory_estimate_is_one_call_shared_by_its_rows(
    exports: dict[str, Path], dynamic_session: GradientSession, tmp_path: Path, name: str
) -> None:
    out = tmp_path / "model.grad.onnx"
    gradify(exports[name], out, shapes={"x": SHAPE})
    fixed = GradientSession(out, device="cpu")
    # Same network: one call's peak over its rows is close to the dynamic graph's per-row growth.
    assert 0.5 <= fixed.bytes_per_sample / dynamic_session.bytes_per_sample <= 2.0


def test_gradify_summary_says_how_the_batch_is_run(exports: dict[str, Path], tmp_path: Path) -> None:
    from models.gradify import summarize

    gradify(exports["dynamo-2"], tmp_path / "g.onnx", shapes={"x": SHAPE})
    lines = summarize(load_model(tmp_path / "g.onnx")).lines()
    assert "batch      fixed by the graph (no dynamic batch axis): 2 rows per run" in lines
