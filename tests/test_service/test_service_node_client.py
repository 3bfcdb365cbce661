"""A client in a second language: Node with @grpc/grpc-js and @grpc/proto-loader (installed with npm
into a cache folder on first use) calls Explain and gets exactly what the Python client gets, for
an image model and for a text model with two inputs (int64 token ids + attention mask)."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from estimator.method import ClassTarget, Method
from models.demo import repository_path
from service.client import ExplainerClient
from service.server import MollifyServer
from service.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = Path(__file__).with_name("node_explain_client.js")
PACKAGES = ("@grpc/grpc-js@1", "@grpc/proto-loader@0.8")


@pytest.fixture(scope="module")
def node_modules() -> Path:
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        pytest.skip("node and npm are not installed")
    cache = Path(
        os.environ.get("MOLLIFY_NODE_CACHE") or Path.home() / ".cache" / "mollify" / "node-client-test"
    )
    modules = cache / "node_modules"
    if not (modules / "@grpc" / "grpc-js").is_dir() or not (modules / "@grpc" / "proto-loader").is_dir():
        cache.mkdir(parents=True, exist_ok=True)
        result = subprocess.run(
            [npm, "install", "--no-audit", "--no-fund", "--silent", "--prefix", str(cache), *PACKAGES],
            capture_output=True,
            text=True,
            timeout=240,
        )
        if result.returncode != 0:
            pytest.skip(f"npm install failed (offline?): {result.stderr.strip()[-300:]}")
    return modules


def test_node_client_explains(
    node_modules: Path, demo_server: MollifyServer, client: ExplainerClient
) -> None:
    result = subprocess.run(
        ["node", str(SCRIPT), f"127.0.0.1:{demo_server.port}", str(ROOT)],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "NODE_PATH": str(node_modules)},
    )
    assert result.returncode == 0, result.stdout + result.stderr
    answer = json.loads(result.stdout)
    pixels = (np.arange(64) % 17 / 16).astype(np.float32).reshape(1, 1, 8, 8)
    [expected] = client.explain("digits_cnn", pixels, method=Method(samples=8), seed=42)
    assert answer["shape"] == [1, 8, 8]
    assert (answer["target_index"], answer["samples"], answer["seed"]) == (expected.target_index, 8, "42")
    assert answer["provider"] == "CPUExecutionProvider"
    assert np.array_equal(
        np.asarray(answer["attribution"], np.float32).reshape(1, 8, 8), expected.attribution
    )


def test_node_client_explains_a_multi_input_text_model(
    node_modules: Path, demo_settings: Settings, helpers: SimpleNamespace, tmp_path: Path
) -> None:
    shutil.copytree(repository_path() / "review_sentiment", tmp_path / "review_sentiment")
    server = helpers.start_server(dataclasses.replace(demo_settings, model_repository=tmp_path))
    try:
        ids = np.array([[3, 7, 11, 2, 30, 9, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0], list(range(1, 17))], np.int64)
        mask = (np.arange(16)[None] < np.array([[6], [16]])).astype(np.int64)
        result = subprocess.run(
            [
                "node",
                str(SCRIPT),
                f"127.0.0.1:{server.port}",
                str(ROOT),
                "review_sentiment",
                json.dumps(ids.tolist()),
                json.dumps(mask.tolist()),
            ],
            capture_output=True,
            text=True,
            timeout=60,
            env={**os.environ, "NODE_PATH": str(node_modules)},
        )
        assert result.returncode == 0, result.stdout + result.stderr
        answers = json.loads(result.stdout)["explanations"]
        with ExplainerClient(f"127.0.0.1:{server.port}") as python_client:
            expected = python_client.explain(
                "review_sentiment",
                ids,
                extra_inputs={"attention_mask": mask},
                method=Method(samples=8),
                target=ClassTarget(1),
                seed=42,
            )
    finally:
        server.stop(0).wait(10)
    assert len(answers) == 2
    for answer, reference in zip(answers, expected, strict=True):
        assert answer["shape"] == [16] and answer["target_index"] == 1 and answer["samples"] == 8
        attribution = np.asarray(answer["attribution"], np.float32)
        assert np.array_equal(attribution, reference.attribution)
