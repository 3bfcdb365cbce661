"""ONNX files with external data (``model.onnx`` + ``model.onnx.data``, torch.onnx.export's default).

The weights stay in their files: the builder reads only the constants its rules need, the gradient
model references the same data (copied beside it when written), ONNX Runtime reads the files, and
NoiseGrad's clean weights are read-only memory maps. The branch that models over 2 GB take (a
self-contained model written with external data) is exercised by lowering
``external_data.INLINE_LIMIT_BYTES``.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

import models.gradient_graph.external_data as external_data
from models.export import export_torch_module, gradient_path
from models.gradient_graph import InvalidModelError, build_gradient_model, load_model, read_gradient_metadata
from models.gradify import check_gradient_model, gradify
from models.runtime import ForwardSession, GradientSession

SHAPE = (3, 8, 8)


class SmallCnn(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = torch.nn.Conv2d(3, 4, 3)
        self.fc = torch.nn.Linear(4 * 6 * 6, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.tanh(self.conv(x)).flatten(1))


def _torch_vjp(x: np.ndarray, cotangent: np.ndarray) -> np.ndarray:
    xt = torch.tensor(x, requires_grad=True)
    (SmallCnn().eval()(xt) * torch.tensor(cotangent)).sum().backward()
    assert xt.grad is not None
    return xt.grad.numpy()


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``torch.onnx.export(net, (x,), path)`` with every default: external data beside the model."""
    path = tmp_path_factory.mktemp("torch-default") / "model.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(SmallCnn().eval(), (torch.rand(1, *SHAPE),), str(path))
    assert (path.parent / "model.onnx.data").is_file()
    return path


def _external(model: onnx.ModelProto) -> list[str]:
    return [t.name for t in model.graph.initializer if external_data.uses_external_data(t)]


def test_load_model_reads_or_keeps_external_data(exported: Path) -> None:
    kept = load_model(exported, external_data=False)
    assert len(_external(kept)) >= 2  # the conv and linear weights stay in model.onnx.data
    loaded = load_model(exported)
    assert _external(loaded) == []
    with pytest.raises(InvalidModelError, match="external data files, which bytes cannot locate"):
        load_model(exported.read_bytes())


def test_gradify_keeps_weights_in_files_and_matches_autograd(exported: Path, tmp_path: Path) -> None:
    out = tmp_path / "grad" / "model.grad.onnx"
    gradify(exported, out, shapes={"x": SHAPE})
    assert (out.parent / "model.grad.onnx.data").is_file()  # a copy beside the gradient model
    written = load_model(out, external_data=False)
    assert len(_external(written)) >= 2
    session = GradientSession(out, device="cpu")
    weight = session.weights[_external(written)[0]]
    assert not weight.flags.writeable and isinstance(weight.base, np.memmap)
    rng = np.random.default_rng(0)
    x = rng.random((3, *SHAPE), dtype=np.float32)
    w = rng.normal(size=(3, 5)).astype(np.float32)
    rows = np.concatenate([session(x[i : i + 1], w[i : i + 1]).gradients for i in range(3)])
    np.testing.assert_allclose(rows, _torch_vjp(x, w), rtol=1e-4, atol=1e-5)
    check = check_gradient_model(out, device="cpu")
    assert check.finite


def test_a_weight_override_reads_the_files_too(exported: Path, tmp_path: Path) -> None:
    out = tmp_path / "model.grad.onnx"
    gradify(exported, out, shapes={"x": SHAPE})
    session = GradientSession(out, device="cpu")
    x = np.random.default_rng(1).random((1, *SHAPE), dtype=np.float32)
    w = np.ones((1, 5), np.float32)
    clean = session(x, w)
    name = next(n for n in session.weights if session.weights[n].ndim == 4)  # the conv kernel
    same = session(x, w, {name: np.array(session.weights[name])})
    np.testing.assert_allclose(same.gradients, clean.gradients, rtol=1e-5, atol=1e-7)
    doubled = session(x, w, {name: 2 * np.array(session.weights[name])})
    assert not np.allclose(doubled.gradients, clean.gradients)


def test_builder_reads_external_constants_from_the_folder(tmp_path: Path) -> None:
    """A Reshape target stored in the data file: the rules need its value, read from the folder."""
    graph = helper.make_graph(
        [
            helper.make_node("Reshape", ["x", "shape"], ["flat"]),
            helper.make_node("MatMul", ["flat", "W"], ["y"]),
        ],
        "reshape",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 2, 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 2])],
        [
            numpy_helper.from_array(np.array([-1, 6], np.int64), "shape"),
            numpy_helper.from_array(np.arange(12, dtype=np.float32).reshape(6, 2), "W"),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 10
    onnx.save_model(
        model, tmp_path / "m.onnx", save_as_external_data=True, location="w.bin", size_threshold=0
    )
    kept = load_model(tmp_path / "m.onnx", external_data=False)
    assert set(_external(kept)) == {"shape", "W"}
    with pytest.raises(InvalidModelError, match="without its folder"):
        build_gradient_model(kept, ["x"])
    gradient = build_gradient_model(kept, ["x"], external_data_dir=tmp_path)
    session = GradientSession(gradient, device="cpu", external_data_dir=tmp_path)
    x = np.ones((2, 2, 3), np.float32)
    result = session(x, np.array([[1, 0], [0, 1]], np.float32))
    W = np.arange(12, dtype=np.float32).reshape(6, 2)
    np.testing.assert_allclose(result.gradients.reshape(2, 6), W.T)


def test_missing_or_escaping_data_files_are_named(exported: Path, tmp_path: Path) -> None:
    folder = tmp_path / "copy"
    folder.mkdir()
    (folder / "model.onnx").write_bytes(exported.read_bytes())
    with pytest.raises(InvalidModelError, match="model.onnx.data.*does not exist beside the model"):
        load_model(folder / "model.onnx", external_data=False)
    model = load_model(exported, external_data=False)
    for tensor in model.graph.initializer:
        for entry in tensor.external_data:
            if entry.key == "location":
                entry.value = "../model.onnx.data"
    (folder / "model.onnx").write_bytes(model.SerializeToString())
    with pytest.raises(InvalidModelError, match="relative to the model's folder, inside it"):
        load_model(folder / "model.onnx", external_data=False)


def test_models_over_the_inline_limit_are_written_with_external_data(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The >2 GB branch: a self-contained model larger than the limit is saved with a data file,
    then served from its path without loading the weights into the model proto."""
    monkeypatch.setattr(external_data, "INLINE_LIMIT_BYTES", 1024)
    original, gradient = export_torch_module(
        SmallCnn(), torch.rand(2, *SHAPE), tmp_path / "model.onnx", input_name="x"
    )
    assert (tmp_path / "model.onnx.data").is_file() and (tmp_path / "model.grad.onnx.data").is_file()
    assert _external(original) and _external(gradient)  # moved to disk, not copied
    assert (tmp_path / "model.grad.onnx").stat().st_size < 16_384
    session = GradientSession(gradient_path(tmp_path / "model.onnx"), device="cpu")
    assert read_gradient_metadata(load_model(tmp_path / "model.grad.onnx")).batching == "dynamic"
    x = np.random.default_rng(2).random((2, *SHAPE), dtype=np.float32)
    w = np.random.default_rng(3).normal(size=(2, 5)).astype(np.float32)
    np.testing.assert_allclose(session(x, w).gradients, _torch_vjp(x, w), rtol=1e-4, atol=1e-5)
    forward = ForwardSession(tmp_path / "model.onnx", device="cpu")
    with torch.no_grad():
        np.testing.assert_allclose(
            forward.run(x)["logits"], SmallCnn().eval()(torch.tensor(x)).numpy(), rtol=1e-5, atol=1e-6
        )


def test_save_model_copies_referenced_files_and_leaves_the_model_alone(
    exported: Path, tmp_path: Path
) -> None:
    model = load_model(exported, external_data=False)
    before = model.SerializeToString()
    written = external_data.save_model(
        model, tmp_path / "out" / "copy.onnx", external_data_dir=exported.parent
    )
    assert [p.name for p in written] == ["copy.onnx.data", "copy.onnx"]
    assert model.SerializeToString() == before
    assert written[0].read_bytes() == (exported.parent / "model.onnx.data").read_bytes()
    reloaded = load_model(written[1])
    for a, b in zip(reloaded.graph.initializer, load_model(exported).graph.initializer, strict=True):
        np.testing.assert_array_equal(numpy_helper.to_array(a), numpy_helper.to_array(b))
    with pytest.raises(InvalidModelError, match="pass external_data_dir"):
        external_data.save_model(model, tmp_path / "x.onnx")
