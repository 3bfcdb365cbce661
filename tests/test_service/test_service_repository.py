"""The model repository: broken models never stop the server, reloads without restarts, names
that cannot escape the folder, gradient graphs cached on disk by content; PyTorch exports as the
exporter writes them (external data, a fixed batch) and models that cannot be differentiated,
with errors that say what to do."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from estimator.method import Method
from models.runtime import OrtBackend
from service.client import ExplainerClient, MollifyError
from service.errors import InvalidRequestError
from service.repository import ModelRepository, validate_model_name
from service.server import MollifyServer, create_server
from service.settings import Settings

X = np.full((1, 4), 0.25, np.float32)


def _unsupported_op_model() -> onnx.ModelProto:
    """``y = Det(reshape(x, 2x2))``: an op with no gradient rule on the path from x to y."""
    shape = helper.make_tensor("shape", TensorProto.INT64, [3], [-1, 2, 2])
    graph = helper.make_graph(
        [
            helper.make_node("Reshape", ["x", "shape"], ["square"]),
            helper.make_node("Det", ["square"], ["det"]),
            helper.make_node("Unsqueeze", ["det", "axes"], ["logits"]),
        ],
        "det",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 1])],
        [shape, helper.make_tensor("axes", TensorProto.INT64, [1], [1])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 10
    return model


@pytest.fixture()
def repository_root(tmp_path: Path, helpers: SimpleNamespace) -> Path:
    root = tmp_path / "models"
    helpers.write_model(root, "good")
    helpers.write_model(root, "corrupt", model=b"\x08\x07garbage that is not a protobuf\xff\xff")
    helpers.write_model(root, "truncated", model=helpers.linear_model().SerializeToString()[:60])
    helpers.write_model(root, "no_rule", model=_unsupported_op_model())
    helpers.write_model(root, "bad_bounds", lower=1.0, upper=0.0)
    helpers.write_model(root, "wrong_input", input_name="nope")
    bad_config = helpers.write_model(root, "bad_config")
    (bad_config / "config.json").write_text('{"name": "bad_config"}')
    (root / "samples").mkdir()  # not a model: neither model.onnx nor config.json
    (root / "bad name").mkdir()
    (root / "bad name" / "model.onnx").write_bytes(b"")
    return root


@pytest.fixture()
def server(repository_root: Path, tmp_path: Path, helpers: SimpleNamespace) -> Iterator[MollifyServer]:
    settings = Settings(
        address="127.0.0.1:0",
        model_repository=repository_root,
        cache_dir=tmp_path / "cache",
        device="cpu",
        intra_op_threads=1,
        max_output_graphs=1,
    )
    server = helpers.start_server(settings)
    yield server
    server.stop(0).wait()


def test_broken_models_are_listed_not_ready_with_their_error(server: MollifyServer) -> None:
    with ExplainerClient(f"127.0.0.1:{server.port}", timeout=30) as client:
        models = {m.name: m for m in client.list_models()}
        assert sorted(models) == [
            "bad_bounds",
            "bad_config",
            "corrupt",
            "good",
            "no_rule",
            "truncated",
            "wrong_input",
        ]
        assert models["good"].ready and models["good"].error == ""
        expected_errors = {
            "corrupt": "",
            "truncated": "",
            "no_rule": "Det",
            "bad_bounds": "lower must be below upper",
            "wrong_input": "nope",
            "bad_config": "lacks the field",
        }
        for name, fragment in expected_errors.items():
            assert not models[name].ready, name
            assert models[name].error and fragment in models[name].error, (name, models[name].error)
            assert client.health(name) == "NOT_SERVING"
        with pytest.raises(MollifyError) as caught:
            client.explain("no_rule", X)
        assert caught.value.code == "FAILED_PRECONDITION" and "Det" in caught.value.message
        assert client.health() == "SERVING"
        assert client.explain("good", X, method=Method(samples=3), seed=0)[0].samples == 3


def test_reload_adds_changes_and_removes_models(
    server: MollifyServer, repository_root: Path, helpers: SimpleNamespace
) -> None:
    good_session = server.repository.ready_entry("good").session
    helpers.write_model(repository_root, "added")
    helpers.write_model(repository_root, "corrupt")  # repaired
    (repository_root / "no_rule" / "model.onnx").unlink()
    (repository_root / "no_rule" / "config.json").unlink()
    with ExplainerClient(f"127.0.0.1:{server.port}", timeout=30) as client:
        result = client.reload_models()
        assert (result.added, result.reloaded, result.removed) == (["added"], ["corrupt"], ["no_rule"])
        assert {m.name for m in result.models} == {m.name for m in client.list_models()}
        assert client.get_model("corrupt").ready and client.health("corrupt") == "SERVING"
        assert client.health("added") == "SERVING"
        assert client.health("no_rule") == "SERVICE_UNKNOWN"
        with pytest.raises(MollifyError) as caught:
            client.get_model("no_rule")
        assert caught.value.code == "NOT_FOUND"
        assert client.reload_models().reloaded == []  # nothing changed: nothing reloaded
    assert (
        server.repository.ready_entry("good").session is good_session
    )  # unchanged models keep their session


def test_gradient_graphs_are_cached_by_content(
    server: MollifyServer,
    tmp_path: Path,
    repository_root: Path,
    helpers: SimpleNamespace,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    cached = sorted((tmp_path / "cache").glob("*.onnx"))
    assert len(cached) >= 1
    import service.graphs

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("a cached gradient graph was rebuilt")

    monkeypatch.setattr(service.graphs, "build_gradient_model", refuse)
    again = ModelRepository(repository_root, tmp_path / "cache", backend=OrtBackend(device="cpu"))
    again.reload()
    assert again.ready_entry("good").info.ready
    helpers.write_model(
        repository_root, "good", model=helpers.linear_model(seed=5)
    )  # new content → new graph
    again.reload()
    info = again.entry("good").info  # the new graph was built (refused here): the old version keeps serving
    assert info.ready and info.stale and "cached gradient graph was rebuilt" in info.candidate_error


def test_other_tensors_are_explained_on_demand(server: MollifyServer) -> None:
    with ExplainerClient(f"127.0.0.1:{server.port}", timeout=30) as client:
        for output in ("probabilities", "hidden", "probabilities"):
            [result] = client.explain("good", X, method=Method(mode="none"), target=("output", output))
            assert result.output == output
            assert result.outputs.shape == {"probabilities": (3,), "hidden": (4,)}[output]
    assert len(server.repository.ready_entry("good")._extra) == 1  # max_output_graphs bounds the cache


def test_a_folder_resolving_outside_the_repository_is_refused(
    tmp_path: Path, helpers: SimpleNamespace
) -> None:
    outside = helpers.write_model(tmp_path / "elsewhere", "secret")
    root = tmp_path / "repo"
    root.mkdir()
    os.symlink(outside, root / "escape", target_is_directory=True)
    repository = ModelRepository(root, tmp_path / "cache", session_factory=helpers.slow_factory(0.0))
    repository.reload()
    assert not repository.entry("escape").info.ready
    assert "outside the repository" in repository.entry("escape").info.error


@pytest.mark.parametrize("name", ["", ".", "..", "../x", "a/b", "a\\b", "x\0", "名前", "a b"])
def test_invalid_model_names(name: str) -> None:
    with pytest.raises(InvalidRequestError, match="model_name must match"):
        validate_model_name(name)


def test_valid_model_names() -> None:
    for name in ("digits_cnn", "resnet-18.v2", "A.b_c-1", "..a"):
        assert validate_model_name(name) == name


def test_demo_repository_is_the_default(graph_cache: Path) -> None:
    settings = Settings(address="127.0.0.1:0", cache_dir=graph_cache, device="cpu")
    server, port = create_server(settings)
    try:
        assert port > 0
        assert {"digits_cnn", "breast_cancer_mlp"} <= {
            m.name for m in server.repository.list_models() if m.ready
        }
    finally:
        server.stop(0).wait()


# --------------------------------------------------------------------------- real exports (issue 9)

IMAGE = (3, 8, 8)


def _view_cnn() -> Any:
    """Conv → tanh → ``view(batch, -1)`` → Linear (seeded); an export without dynamic axes bakes the batch in."""
    import torch

    class ViewCnn(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            torch.manual_seed(0)
            self.conv = torch.nn.Conv2d(3, 4, 3)
            self.fc = torch.nn.Linear(4 * 6 * 6, 5)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.fc(torch.tanh(self.conv(x)).view(x.size(0), -1))

    return ViewCnn().eval()


def _torch_export_with_defaults(folder: Path, *, dynamo: bool = True) -> Path:
    """What the README's "Adding your own model" says: ``torch.onnx.export(net, (example,), path)``,
    every default kept (the dynamo exporter writes ``model.onnx.data``; the batch is fixed to 1)."""
    import warnings

    import torch

    from models.config import ModelConfig

    folder.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            _view_cnn(),
            (torch.rand(1, *IMAGE),),
            str(folder / "model.onnx"),
            input_names=["input"],
            output_names=["logits"],
            dynamo=dynamo,
        )
    ModelConfig(
        name=folder.name,
        input_name="input",
        input_shape=IMAGE,
        explained_tensor="logits",
        lower=0.0,
        upper=1.0,
        labels=list("abcde"),
    ).save(folder)
    return folder


def _dynamic_reference(folder: Path) -> Path:
    import torch

    from models.config import ModelConfig
    from models.export import export_torch_onnx, save_model

    save_model(
        export_torch_onnx(_view_cnn(), torch.rand(2, *IMAGE), input_name="input"), folder / "model.onnx"
    )
    ModelConfig(
        name=folder.name,
        input_name="input",
        input_shape=IMAGE,
        explained_tensor="logits",
        lower=0.0,
        upper=1.0,
        labels=list("abcde"),
    ).save(folder)
    return folder


@pytest.fixture()
def export_server(tmp_path: Path, helpers: SimpleNamespace) -> Iterator[MollifyServer]:
    root = tmp_path / "models"
    _torch_export_with_defaults(root / "torch_default")
    _torch_export_with_defaults(root / "torch_legacy", dynamo=False)
    _dynamic_reference(root / "dynamic")
    helpers.write_model(root, "good")
    settings = Settings(
        address="127.0.0.1:0",
        model_repository=root,
        cache_dir=tmp_path / "cache",
        device="cpu",
        intra_op_threads=1,
        memory_budget_bytes=8 << 20,
    )
    server = helpers.start_server(settings)
    yield server
    server.stop(0).wait()


def test_torch_exports_with_default_settings_are_served(export_server: MollifyServer) -> None:
    import torch

    assert (Path(export_server.repository.root) / "torch_default" / "model.onnx.data").is_file()
    x = np.random.default_rng(0).random(IMAGE, dtype=np.float32)
    with ExplainerClient(f"127.0.0.1:{export_server.port}", timeout=60) as client:
        method = Method(samples=8)
        [reference] = client.explain("dynamic", x[None], method=method, seed=5)
        for name in ("torch_legacy", "torch_default"):
            [smooth] = client.explain(name, x[None], method=method, seed=5)  # 8 noisy rows per chunk
            np.testing.assert_allclose(smooth.attribution, reference.attribution, rtol=1e-4, atol=1e-6)
            [plain] = client.explain(name, x[None], method=Method(mode="none"), target=2)
            xt = torch.tensor(x[None], requires_grad=True)
            _view_cnn()(xt)[0, 2].backward()
            np.testing.assert_allclose(plain.attribution, xt.grad.numpy()[0], rtol=1e-4, atol=1e-6)
        models = {m.name: m for m in client.list_models()}
        assert all(m.ready for m in models.values()), {m.name: m.error for m in models.values()}
        assert (models["torch_default"].batching, models["torch_default"].fixed_batch_size) == ("fixed", 1)
        assert (models["torch_legacy"].batching, models["torch_legacy"].fixed_batch_size) == ("fixed", 1)
        assert (models["dynamic"].batching, models["dynamic"].fixed_batch_size) == ("dynamic", 0)
        assert client.get_model("good").batching == "dynamic"


def test_reload_and_cache_notice_a_change_to_external_data(
    export_server: MollifyServer, tmp_path: Path
) -> None:
    folder = Path(export_server.repository.root) / "torch_default"
    x = np.random.default_rng(1).random(IMAGE, dtype=np.float32)
    with ExplainerClient(f"127.0.0.1:{export_server.port}", timeout=60) as client:
        [before] = client.explain("torch_default", x[None], method=Method(mode="none"), target=0)
        data = folder / "model.onnx.data"
        weights = np.frombuffer(data.read_bytes(), np.float32)
        data.write_bytes((2 * weights).tobytes())  # same size, model.onnx unchanged
        assert client.reload_models().reloaded == ["torch_default"]
        [after] = client.explain("torch_default", x[None], method=Method(mode="none"), target=0)
        assert not np.allclose(after.attribution, before.attribution)
    # One cached graph per content of model.onnx.data, each with its own copy of the data.
    data_files = sorted((tmp_path / "cache").glob("*.onnx.data"))
    assert len(data_files) == 2 and all(d.with_suffix("").is_file() for d in data_files)


def test_a_missing_external_data_file_fails_that_model_only(tmp_path: Path, helpers: SimpleNamespace) -> None:
    root = tmp_path / "models"
    folder = _torch_export_with_defaults(root / "no_data")
    (folder / "model.onnx.data").unlink()
    helpers.write_model(root, "good")
    repository = ModelRepository(root, tmp_path / "cache", backend=OrtBackend(device="cpu"))
    repository.reload()
    assert repository.entry("good").info.ready
    error = repository.entry("no_data").info.error
    assert (
        not repository.entry("no_data").info.ready
        and "model.onnx.data" in error
        and "does not exist" in error
    )


def test_the_large_model_path_serves_graphs_with_external_data(
    tmp_path: Path, helpers: SimpleNamespace, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Models over 2 GB: the cached gradient graph is written with its weights in a data file
    (forced here by lowering the limit) and served from there."""
    import models.gradient_graph.external_data as external_data

    monkeypatch.setattr(external_data, "INLINE_LIMIT_BYTES", 2048)
    root = tmp_path / "models"
    model = helpers.linear_model(features=64, classes=8)  # W: 64 x 8 float32, 2 KiB
    helpers.write_model(root, "wide", model=model, input_shape=[64], labels=list("abcdefgh"))
    repository = ModelRepository(root, tmp_path / "cache", backend=OrtBackend(device="cpu"))
    repository.reload()
    assert repository.entry("wide").info.ready, repository.entry("wide").info.error
    [graph] = list((tmp_path / "cache").glob("*.onnx"))
    assert graph.with_name(graph.name + ".data").is_file() and graph.stat().st_size < 2048
    session = repository.ready_entry("wide").session
    assert session is not None
    x = np.full((1, 64), 0.25, np.float32)
    result = session(x, np.eye(8, dtype=np.float32)[:1])
    weights = onnx.numpy_helper.to_array(model.graph.initializer[0])
    np.testing.assert_allclose(result.gradients[0], (1 - np.tanh(x[0]) ** 2) * weights[:, 0], rtol=1e-5)


def _loop_model() -> onnx.ModelProto:
    """``logits = x + x + x``, the sums in a Loop whose body reads x (control flow without a rule)."""
    body = helper.make_graph(
        [
            helper.make_node("Identity", ["cond_in"], ["cond_out"]),
            helper.make_node("Add", ["acc_in", "x"], ["acc_out"]),
        ],
        "body",
        [
            helper.make_tensor_value_info("i", TensorProto.INT64, []),
            helper.make_tensor_value_info("cond_in", TensorProto.BOOL, []),
            helper.make_tensor_value_info("acc_in", TensorProto.FLOAT, ["batch", 4]),
        ],
        [
            helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []),
            helper.make_tensor_value_info("acc_out", TensorProto.FLOAT, ["batch", 4]),
        ],
    )
    graph = helper.make_graph(
        [helper.make_node("Loop", ["two", "", "x"], ["logits"], name="sum_loop", body=body)],
        "loop_model",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 4])],
        [helper.make_tensor("two", TensorProto.INT64, [], [2])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 10
    return model


def _token_model() -> onnx.ModelProto:
    """int64 token ids → embedding Gather → mean → MatMul."""
    rng = np.random.default_rng(2)
    graph = helper.make_graph(
        [
            helper.make_node("Gather", ["embedding", "x"], ["embedded"], name="embed"),
            helper.make_node("ReduceMean", ["embedded", "axes"], ["pooled"], keepdims=0),
            helper.make_node("MatMul", ["pooled", "W"], ["logits"]),
        ],
        "tokens",
        [helper.make_tensor_value_info("x", TensorProto.INT64, ["batch", 4])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 3])],
        [
            onnx.numpy_helper.from_array(rng.normal(size=(10, 2)).astype(np.float32), "embedding"),
            onnx.numpy_helper.from_array(np.array([1], np.int64), "axes"),
            onnx.numpy_helper.from_array(rng.normal(size=(2, 3)).astype(np.float32), "W"),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 10
    return model


def _ml_only_model() -> onnx.ModelProto:
    """A linear classifier as converters of classical models write it: only the ai.onnx.ml domain."""
    node = helper.make_node(
        "LinearClassifier",
        ["x"],
        ["label", "logits"],
        domain="ai.onnx.ml",
        name="linear",
        coefficients=[0.1 * i for i in range(12)],
        intercepts=[0.0, 0.1, 0.2],
        classlabels_ints=[0, 1, 2],
    )
    graph = helper.make_graph(
        [node],
        "ml",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])],
        [
            helper.make_tensor_value_info("label", TensorProto.INT64, ["batch"]),
            helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 3]),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("ai.onnx.ml", 1)])
    model.ir_version = 10
    return model


def test_models_that_cannot_be_differentiated_say_where_and_what_to_do(
    tmp_path: Path, helpers: SimpleNamespace
) -> None:
    root = tmp_path / "models"
    helpers.write_model(root, "good")
    helpers.write_model(root, "control_flow", model=_loop_model(), labels=["a", "b", "c", "d"])
    helpers.write_model(root, "tokens", model=_token_model())
    helpers.write_model(root, "classical", model=_ml_only_model())
    settings = Settings(
        address="127.0.0.1:0",
        model_repository=root,
        cache_dir=tmp_path / "cache",
        device="cpu",
        intra_op_threads=1,
    )
    server = helpers.start_server(settings)
    expected = {
        "control_flow": [
            "UnsupportedOpError",
            "Loop node 'sum_loop'",
            "its subgraphs read 'x'",
            "Control flow",
        ],
        "tokens": [
            "'x' has element type INT64",
            "'embedded'",
            "onnx.utils.extract_model",
            "--input embedded",
        ],
        "classical": ["LinearClassifier (ai.onnx.ml) node 'linear'", "surrogate", "underlying network"],
    }
    try:
        with ExplainerClient(f"127.0.0.1:{server.port}", timeout=30) as client:
            assert client.get_model("good").ready
            for name, fragments in expected.items():
                info = client.get_model(name)
                assert not info.ready and all(f in info.error for f in fragments), (name, info.error)
                with pytest.raises(MollifyError) as caught:
                    client.explain(name, X)
                assert caught.value.code == "FAILED_PRECONDITION"
                assert all(f in caught.value.message for f in fragments), caught.value.message
            assert client.explain("good", X, method=Method(samples=3), seed=0)[0].samples == 3
    finally:
        server.stop(0).wait()


def test_a_damaged_cached_graph_is_rebuilt_not_served(tmp_path: Path, helpers: SimpleNamespace) -> None:
    root = tmp_path / "models"
    folder = _torch_export_with_defaults(root / "torch_default")
    ModelRepository(root, tmp_path / "cache", backend=OrtBackend(device="cpu")).reload()
    graphs = sorted((tmp_path / "cache").glob("*.onnx*"))
    assert [p.suffix for p in graphs] == [".onnx", ".data"]
    for path in graphs:
        path.write_bytes(b"damaged")  # a crash mid-write elsewhere, an edit by hand
    again = ModelRepository(root, tmp_path / "cache", backend=OrtBackend(device="cpu"))
    again.reload()
    assert again.entry("torch_default").info.ready, again.entry("torch_default").info.error
    session = again.ready_entry("torch_default").session
    assert session is not None
    x = np.zeros((1, *IMAGE), np.float32)
    assert np.isfinite(session(x, np.ones((1, 5), np.float32)).gradients).all()
    assert (folder / "model.onnx.data").is_file()
