"""Token ids over HTTP: the bundled text model (int64 ids + attention mask) explained through the
KServe v1 and Open Inference Protocol routes gives bitwise what gRPC gives; integers travel as
integers, and an explained input named in ``parameters`` works as over gRPC."""

from __future__ import annotations

import dataclasses
import http.client
import json
import shutil
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

from estimator.method import ClassTarget, Method
from models.demo import repository_path
from service.client import ExplainerClient
from service.server import MollifyServer
from service.settings import Settings

MODEL = "review_sentiment"
SUM = "/Add_output_0"  # token + position embeddings in the bundled export


def _post(port: int, path: str, body: Any) -> tuple[int, Any]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        connection.request(
            "POST", path, body=json.dumps(body).encode(), headers={"content-type": "application/json"}
        )
        response = connection.getresponse()
        return response.status, json.loads(response.read())
    finally:
        connection.close()


def _get(port: int, path: str) -> Any:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        connection.request("GET", path)
        return json.loads(connection.getresponse().read())
    finally:
        connection.close()


@pytest.fixture(scope="module")
def server(
    demo_settings: Settings, helpers: SimpleNamespace, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[MollifyServer]:
    root = tmp_path_factory.mktemp("text-http")
    shutil.copytree(repository_path() / MODEL, root / MODEL)
    settings = dataclasses.replace(
        demo_settings,
        model_repository=root,
        http_address="127.0.0.1:0",
        max_evaluations=200_000,
        memory_budget_bytes=64 << 20,
    )
    started = helpers.start_server(settings)
    yield started
    started.stop(0).wait(10)


@pytest.fixture(scope="module")
def ids_and_mask() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(4)
    ids = rng.integers(1, 45, size=(2, 16)).astype(np.int64)
    mask = np.ones_like(ids)
    mask[0, 9:] = 0
    ids[0, 9:] = 0
    return ids, mask


def test_metadata_lists_integer_inputs(server: MollifyServer) -> None:
    meta = _get(server.http_port, f"/v2/models/{MODEL}")
    assert [(t["name"], t["datatype"], t["shape"]) for t in meta["inputs"]] == [
        ("input_ids", "INT64", [-1, 16]),
        ("attention_mask", "INT64", [-1, 16]),
    ]


def test_ids_and_mask_over_http_equal_grpc(
    server: MollifyServer, ids_and_mask: tuple[np.ndarray, np.ndarray]
) -> None:
    ids, mask = ids_and_mask
    with ExplainerClient(f"127.0.0.1:{server.port}") as client:
        expected = client.explain(
            MODEL,
            ids,
            extra_inputs={"attention_mask": mask},
            method=Method(samples=8),
            target=ClassTarget(1),
            seed=5,
        )
    parameters = {"samples": 8, "seed": 5, "target": {"class_index": 1}}
    oip = {
        "inputs": [
            {"name": "attention_mask", "datatype": "INT64", "shape": [2, 16], "data": mask.tolist()},
            {"name": "input_ids", "datatype": "INT64", "shape": [2, 16], "data": ids.reshape(-1).tolist()},
        ],
        "parameters": parameters,
    }
    status, v2 = _post(server.http_port, f"/v2/models/{MODEL}/explain", oip)
    assert status == 200, v2
    outputs = {o["name"]: o for o in v2["outputs"]}
    assert outputs["attribution"]["shape"] == [2, 16]
    got = np.asarray(outputs["attribution"]["data"], np.float32).reshape(2, 16)
    assert got.tobytes() == np.stack([e.attribution for e in expected]).tobytes()
    instances = [
        {"input_ids": row.tolist(), "attention_mask": m.tolist()} for row, m in zip(ids, mask, strict=True)
    ]
    status, v1 = _post(
        server.http_port, f"/v1/models/{MODEL}:explain", {"instances": instances, "parameters": parameters}
    )
    assert status == 200, v1
    for explanation, reference in zip(v1["explanations"], expected, strict=True):
        assert np.asarray(explanation["attribution"], np.float32).tobytes() == reference.attribution.tobytes()
        assert (
            np.asarray(explanation["standard_error"], np.float32).tobytes()
            == reference.standard_error.tobytes()
        )


def test_an_explained_input_named_over_http_equals_grpc(
    server: MollifyServer, ids_and_mask: tuple[np.ndarray, np.ndarray]
) -> None:
    ids, mask = ids_and_mask
    gradient = Method(base="gradient", mode="none")
    with ExplainerClient(f"127.0.0.1:{server.port}") as client:
        expected = client.explain(
            MODEL,
            ids[:1],
            extra_inputs={"attention_mask": mask[:1]},
            method=gradient,
            target=ClassTarget(0),
            lower=-3.0,
            upper=3.0,
            explained_input=SUM,
        )[0]
    assert expected.attribution.shape == (16, 32)  # not a lookup: no per-token reduction
    instances = [{"input_ids": ids[0].tolist(), "attention_mask": mask[0].tolist()}]
    parameters = {
        "mode": "none",
        "base": "gradient",
        "target": {"class_index": 0},
        "lower": -3.0,
        "upper": 3.0,
        "explained_input": SUM,
    }
    status, v1 = _post(
        server.http_port, f"/v1/models/{MODEL}:explain", {"instances": instances, "parameters": parameters}
    )
    assert status == 200, v1
    assert (
        np.asarray(v1["explanations"][0]["attribution"], np.float32).tobytes()
        == expected.attribution.tobytes()
    )


@pytest.mark.parametrize(
    ("body", "words"),
    [
        ({"instances": [{"input_ids": [1.5] * 16, "attention_mask": [1] * 16}]}, ["whole numbers", "int64"]),
        ({"instances": [{"input_ids": [1] * 16}]}, ["attention_mask", "exactly the request inputs"]),
        ({"instances": [[1] * 16]}, ["extra_inputs", "attention_mask"]),
        (
            {"instances": [{"input_ids": [2**63] * 16, "attention_mask": [1] * 16}]},
            ["outside the int64 range"],
        ),
        (
            {
                "instances": [{"input_ids": [1] * 16, "attention_mask": [1] * 16}],
                "parameters": {"explained_input": 3},
            },
            ["parameters.explained_input must be a tensor name"],
        ),
        (
            {
                "instances": [{"input_ids": [1] * 16, "attention_mask": [1] * 16}],
                "parameters": {"explained_input": "nope"},
            },
            ["'nope'", "not a tensor of the graph"],
        ),
    ],
)
def test_bad_text_bodies_are_invalid_arguments(server: MollifyServer, body: Any, words: list[str]) -> None:
    status, document = _post(server.http_port, f"/v1/models/{MODEL}:explain", body)
    assert status == 400 and document["code"] == "INVALID_ARGUMENT", document
    for word in words:
        assert word in document["error"], document["error"]
