"""Other servers' model repositories: Triton's (``name/config.pbtxt``, ``name/<version>/model.onnx``;
the highest version unless pinned) and KServe's single-model folder (only ``model.onnx``: the
config inferred from the graph, and GetModel says so); KServe's flag spellings."""

from __future__ import annotations

import argparse
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import onnx
import pytest

from service.client import ExplainerClient
from service.layouts import infer_config
from service.settings import Settings, add_arguments


def _write_version(helpers: SimpleNamespace, folder: Path, classes: int) -> None:
    folder.mkdir(parents=True)
    (folder / "model.onnx").write_bytes(helpers.linear_model(classes=classes).SerializeToString())


def _settings(root: Path, cache: Path, **values: object) -> Settings:
    return Settings(
        address="127.0.0.1:0",
        model_repository=root,
        cache_dir=cache,
        device="cpu",
        intra_op_threads=1,
        max_concurrent_requests=1,
        **values,
    )  # type: ignore[arg-type]


def test_triton_repository_serves_the_highest_version(
    tmp_path: Path, graph_cache: Path, helpers: SimpleNamespace
) -> None:
    model = tmp_path / "repo" / "tabular"
    _write_version(helpers, model / "1", classes=3)
    _write_version(helpers, model / "2", classes=5)
    (model / "config.pbtxt").write_text('name: "tabular"\nbackend: "onnxruntime"\nmax_batch_size: 8\n')
    server = helpers.start_server(
        _settings(tmp_path / "repo", graph_cache, inferred_lower=-1.0, inferred_upper=1.0)
    )
    try:
        with ExplainerClient(f"127.0.0.1:{server.port}") as client:
            info = client.get_model("tabular")
            assert info.ready, info.error
            assert info.output_shape == (3 + 2,)
            assert info.layout == "triton version 2 of [1, 2]"
            result = client.explain("tabular", np.zeros((1, 4), np.float32), target=4, seed=1)[0]
            assert result.target_index == 4
    finally:
        server.stop(0).wait(10)


def test_triton_config_pbtxt_pins_a_version(
    tmp_path: Path, graph_cache: Path, helpers: SimpleNamespace
) -> None:
    model = tmp_path / "repo" / "tabular"
    _write_version(helpers, model / "1", classes=3)
    _write_version(helpers, model / "2", classes=5)
    (model / "config.pbtxt").write_text(
        'name: "tabular"\nversion_policy: { specific: { versions: [1] } }\nbackend: "onnxruntime"\n'
    )
    server = helpers.start_server(_settings(tmp_path / "repo", graph_cache))
    try:
        info = server.repository.entry("tabular").info
        assert (info.ready, info.output_shape, info.layout) == (True, (3,), "triton version 1 of [1, 2]")
    finally:
        server.stop(0).wait(10)


def test_kserve_model_dir_with_only_model_onnx(
    tmp_path: Path, graph_cache: Path, helpers: SimpleNamespace
) -> None:
    folder = tmp_path / "mnt-models"
    folder.mkdir()
    (folder / "model.onnx").write_bytes(helpers.linear_model(classes=3).SerializeToString())
    settings = _settings(folder, graph_cache, model_name="tabular", inferred_lower=-2.0, inferred_upper=2.0)
    server = helpers.start_server(settings)
    try:
        with ExplainerClient(f"127.0.0.1:{server.port}") as client:
            (info,) = client.list_models()
            assert (info.name, info.ready, info.layout) == ("tabular", True, "kserve")
            assert (info.input_name, info.input_shape, info.output_name) == ("x", (4,), "probabilities")
            assert "inferred from the graph" in info.config_source and "[-2, 2]" in info.config_source
            assert float(info.lower.min()) == -2.0 and float(info.upper.max()) == 2.0
    finally:
        server.stop(0).wait(10)


def test_inference_refuses_a_symbolic_instance_axis(helpers: SimpleNamespace) -> None:
    model = helpers.linear_model()
    model.graph.input[0].type.tensor_type.shape.dim[1].dim_param = "features"
    with pytest.raises(ValueError, match="axis 1 of input 'x' has no fixed size.*config.json"):
        infer_config(model, "m", 0.0, 1.0)
    empty = onnx.ModelProto()
    with pytest.raises(ValueError, match="no float input"):
        infer_config(empty, "m", 0.0, 1.0)


def test_kserve_flag_spellings(tmp_path: Path) -> None:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = parser.parse_args(
        [
            "--model_dir",
            str(tmp_path),
            "--model_name",
            "m",
            "--http_port",
            "8080",
            "--grpc_port",
            "8081",
            "--predictor_host",
            "ignored:80",
        ]
    )
    settings = Settings.from_sources(args, environ={})
    assert settings.model_repository == tmp_path and settings.model_name == "m"
    assert (settings.http_address, settings.address) == ("0.0.0.0:8080", "0.0.0.0:8081")
    explicit = parser.parse_args(["--http_port", "8080", "--http-address", "127.0.0.1:9000"])
    assert Settings.from_sources(explicit, environ={}).http_address == "127.0.0.1:9000"
