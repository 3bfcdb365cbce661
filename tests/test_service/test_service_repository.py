"""The model repository: broken models never stop the server, reloads without restarts, names
that cannot escape the folder, gradient graphs cached on disk by content."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from estimator.method import Method
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
        [helper.make_node("Reshape", ["x", "shape"], ["square"]), helper.make_node("Det", ["square"], ["det"]),
         helper.make_node("Unsqueeze", ["det", "axes"], ["logits"])],
        "det", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])],
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
    settings = Settings(address="127.0.0.1:0", model_repository=repository_root, cache_dir=tmp_path / "cache",
                        device="cpu", intra_op_threads=1, max_output_graphs=1)
    server = helpers.start_server(settings)
    yield server
    server.stop(0).wait()


def test_broken_models_are_listed_not_ready_with_their_error(server: MollifyServer) -> None:
    with ExplainerClient(f"127.0.0.1:{server.port}", timeout=30) as client:
        models = {m.name: m for m in client.list_models()}
        assert sorted(models) == ["bad_bounds", "bad_config", "corrupt", "good", "no_rule", "truncated", "wrong_input"]
        assert models["good"].ready and models["good"].error == ""
        expected_errors = {
            "corrupt": "", "truncated": "", "no_rule": "Det", "bad_bounds": "lower must be below upper",
            "wrong_input": "nope", "bad_config": "lacks the field",
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


def test_reload_adds_changes_and_removes_models(server: MollifyServer, repository_root: Path,
                                                helpers: SimpleNamespace) -> None:
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
    assert server.repository.ready_entry("good").session is good_session  # unchanged models keep their session


def test_gradient_graphs_are_cached_by_content(server: MollifyServer, tmp_path: Path, repository_root: Path,
                                               helpers: SimpleNamespace, monkeypatch: pytest.MonkeyPatch) -> None:
    cached = sorted((tmp_path / "cache").glob("*.onnx"))
    assert len(cached) >= 1
    import service.graphs

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("a cached gradient graph was rebuilt")

    monkeypatch.setattr(service.graphs, "build_gradient_model", refuse)
    again = ModelRepository(repository_root, tmp_path / "cache", device="cpu")
    again.reload()
    assert again.ready_entry("good").info.ready
    helpers.write_model(repository_root, "good", model=helpers.linear_model(seed=5))  # new content → new graph
    again.reload()
    assert not again.entry("good").info.ready and "cached gradient graph was rebuilt" in again.entry("good").info.error


def test_other_tensors_are_explained_on_demand(server: MollifyServer) -> None:
    with ExplainerClient(f"127.0.0.1:{server.port}", timeout=30) as client:
        for output in ("probabilities", "hidden", "probabilities"):
            [result] = client.explain("good", X, method=Method(mode="none"), target=("output", output))
            assert result.output == output
            assert result.outputs.shape == {"probabilities": (3,), "hidden": (4,)}[output]
    assert len(server.repository.ready_entry("good")._extra) == 1  # max_output_graphs bounds the cache


def test_a_folder_resolving_outside_the_repository_is_refused(tmp_path: Path, helpers: SimpleNamespace) -> None:
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
        assert {"digits_cnn", "breast_cancer_mlp"} <= {m.name for m in server.repository.list_models() if m.ready}
    finally:
        server.stop(0).wait()
