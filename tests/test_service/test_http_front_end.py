"""The HTTP front end (KServe v1, Open Inference Protocol) over real HTTP against a real server on
port 0: every route, the shared error table, bearer auth, limits, request ids, and bitwise the
same explanation as gRPC for the same seed."""

from __future__ import annotations

import dataclasses
import http.client
import json
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import grpc
import numpy as np
import pytest

from estimator.method import Method
from service.client import ExplainerClient
from service.errors import RequestLimitError
from service.server import MollifyServer
from service.settings import Settings
from service.status import STATUS_TABLE, failure_for

TOKEN = "s3cret-token"


def _request(
    port: int,
    method: str,
    path: str,
    body: Any = None,
    headers: dict[str, str] | None = None,
    raw: bytes | None = None,
) -> tuple[int, dict[str, str], Any]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        connection.request(
            method, path, body=data, headers={"content-type": "application/json", **(headers or {})}
        )
        response = connection.getresponse()
        payload = response.read()
        content_type = response.getheader("content-type") or ""
        document = json.loads(payload) if content_type.startswith("application/json") else payload.decode()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, document
    finally:
        connection.close()


@pytest.fixture(scope="module")
def http_server(demo_settings: Settings, helpers: SimpleNamespace) -> Iterator[MollifyServer]:
    settings = dataclasses.replace(demo_settings, http_address="127.0.0.1:0", max_instances=4)
    server = helpers.start_server(settings)
    yield server
    server.stop(0).wait(10)


@pytest.fixture(scope="module")
def digits_instance() -> np.ndarray:
    rng = np.random.default_rng(3)
    return rng.uniform(0, 1, size=(1, 1, 8, 8)).astype(np.float32)


def test_health_and_metadata_routes(http_server: MollifyServer) -> None:
    port = http_server.http_port
    assert port
    assert _request(port, "GET", "/v2/health/live")[::2] == (200, {"live": True})
    assert _request(port, "GET", "/v2/health/ready")[::2] == (200, {"ready": True})
    status, _, server_meta = _request(port, "GET", "/v2")
    assert status == 200 and server_meta["name"] == "mollify" and "explain" in server_meta["extensions"]
    status, _, meta = _request(port, "GET", "/v2/models/digits_cnn")
    assert status == 200
    assert meta["inputs"][0]["shape"] == [-1, 1, 8, 8] and meta["inputs"][0]["datatype"] == "FP32"
    assert meta["parameters"]["ready"] is True and meta["parameters"]["config_source"] == "config.json"
    assert _request(port, "GET", "/v2/models/digits_cnn/ready")[::2] == (
        200,
        {"name": "digits_cnn", "ready": True},
    )
    status, _, listing = _request(port, "GET", "/v1/models")
    assert status == 200 and {"digits_cnn", "breast_cancer_mlp"} <= set(listing["models"])
    status, _, v1_status = _request(port, "GET", "/v1/models/digits_cnn")
    assert status == 200 and v1_status["ready"] is True
    status, headers, text = _request(port, "GET", "/metrics")
    assert (
        status == 200
        and "mollify_requests_total" in text
        and headers["content-type"].startswith("text/plain")
    )


def test_v1_and_oip_explain_match_grpc_bitwise(
    http_server: MollifyServer, digits_instance: np.ndarray
) -> None:
    method = Method(samples=8, alpha=0.2)
    with ExplainerClient(f"127.0.0.1:{http_server.port}") as client:
        expected = client.explain("digits_cnn", digits_instance, method=method, target=3, seed=11)[0]
    parameters = {"samples": 8, "alpha": 0.2, "mode": "input", "seed": 11, "target": {"class_index": 3}}
    status, headers, v1 = _request(
        http_server.http_port,
        "POST",
        "/v1/models/digits_cnn:explain",
        {"instances": digits_instance.tolist(), "parameters": parameters},
        headers={"x-request-id": "req-v1.7"},
    )
    assert status == 200, v1
    assert headers["x-request-id"] == "req-v1.7" and v1["request_id"] == "req-v1.7"
    (got,) = v1["explanations"]
    attribution = np.asarray(got["attribution"], dtype=np.float32)
    assert attribution.tobytes() == expected.attribution.tobytes()
    assert np.asarray(got["standard_error"], np.float32).tobytes() == expected.standard_error.tobytes()
    assert (got["target"], got["samples"], got["seed"]) == (3, 8, 11)
    assert got["inherent_noise"] == expected.inherent_noise

    oip = {
        "inputs": [
            {
                "name": "input",
                "datatype": "FP32",
                "shape": list(digits_instance.shape),
                "data": digits_instance.reshape(-1).tolist(),
            }
        ],
        "parameters": parameters,
    }
    status, _, v2 = _request(http_server.http_port, "POST", "/v2/models/digits_cnn/explain", oip)
    assert status == 200, v2
    outputs = {o["name"]: o for o in v2["outputs"]}
    assert outputs["attribution"]["shape"] == [1, 1, 8, 8]
    assert np.asarray(outputs["attribution"]["data"], np.float32).tobytes() == expected.attribution.tobytes()
    assert outputs["target"]["data"] == [3] and outputs["seed"]["data"] == [11]


def test_kserve_client_style_request(http_server: MollifyServer, digits_instance: np.ndarray) -> None:
    """The documented KServe v1 body: nested-list instances, no parameters (server defaults)."""
    body = {"instances": [digits_instance[0].tolist(), digits_instance[0].tolist()]}
    status, _, document = _request(http_server.http_port, "POST", "/v1/models/digits_cnn:explain", body)
    assert status == 200, document
    first, second = document["explanations"]
    assert (first["instance_index"], second["instance_index"]) == (0, 1)
    assert np.asarray(first["attribution"]).shape == (1, 8, 8)
    assert first["samples"] == 50 and first["target"] == second["target"]


@pytest.mark.parametrize(
    ("path", "body", "status", "code", "needle"),
    [
        ("/v1/models/nope:explain", {"instances": [[1.0]]}, 404, "NOT_FOUND", "not in the repository"),
        (
            "/v1/models/digits_cnn:explain",
            {"instances": [[[[0.5] * 8] * 8]] * 5},
            413,
            "RESOURCE_EXHAUSTED",
            "max-instances",
        ),
        (
            "/v1/models/digits_cnn:explain",
            {"instances": [[1.0, 2.0], [1.0]]},
            400,
            "INVALID_ARGUMENT",
            "ragged",
        ),
        ("/v1/models/digits_cnn:explain", {"instances": [["a"]]}, 400, "INVALID_ARGUMENT", "numbers only"),
        ("/v1/models/digits_cnn:explain", {"rows": []}, 400, "INVALID_ARGUMENT", "unknown keys ['rows']"),
        (
            "/v1/models/digits_cnn:explain",
            {"instances": [[[[0.5] * 8] * 8]], "parameters": {"smaples": 3}},
            400,
            "INVALID_ARGUMENT",
            "'smaples'",
        ),
        (
            "/v1/models/digits_cnn:explain",
            {"instances": [[[[0.5] * 8] * 8]], "parameters": {"mode": "loud"}},
            400,
            "INVALID_ARGUMENT",
            "parameters",
        ),
        (
            "/v1/models/digits_cnn:explain",
            {"instances": [[[0.5] * 8] * 8]},
            400,
            "INVALID_ARGUMENT",
            "inputs.shape",
        ),
        (
            "/v2/models/digits_cnn/explain",
            {"inputs": [{"name": "x", "datatype": "INT8", "shape": [1], "data": [1]}]},
            400,
            "INVALID_ARGUMENT",
            "datatype",
        ),
        (
            "/v2/models/digits_cnn/explain",
            {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 1, 8, 8], "data": [0.5]}]},
            400,
            "INVALID_ARGUMENT",
            "needs 64",
        ),
        ("/v2/models/bad$name/explain", {"inputs": []}, 400, "INVALID_ARGUMENT", "inputs"),
    ],
)
def test_error_table_over_http(
    http_server: MollifyServer, path: str, body: Any, status: int, code: str, needle: str
) -> None:
    got, headers, document = _request(http_server.http_port, "POST", path, body)
    assert (got, document["code"]) == (status, code), document
    assert needle in document["error"]
    assert headers["x-request-id"] == document["request_id"]


def test_malformed_json_and_unknown_model_metadata(http_server: MollifyServer) -> None:
    status, _, document = _request(
        http_server.http_port, "POST", "/v1/models/digits_cnn:explain", raw=b"{not json"
    )
    assert (status, document["code"]) == (400, "INVALID_ARGUMENT") and "not valid JSON" in document["error"]
    assert _request(http_server.http_port, "GET", "/v2/models/nope")[0] == 404
    assert _request(http_server.http_port, "GET", "/v2/models/nope/ready")[0] == 404


def test_body_over_the_message_limit_is_refused(http_server: MollifyServer) -> None:
    limit = http_server.settings.max_message_bytes
    status, _, document = _request(
        http_server.http_port,
        "POST",
        "/v1/models/digits_cnn:explain",
        raw=b"[" + b"0," * (limit // 2) + b"0]",
    )
    assert (status, document["code"]) == (413, "RESOURCE_EXHAUSTED")
    assert "--max-message-bytes" in document["error"]


def test_every_table_row_has_an_http_status() -> None:
    for error_type, code, http_status in STATUS_TABLE:
        assert 400 <= http_status < 600, (error_type, code)
    failure = failure_for(RequestLimitError("too big"), "rid")
    assert (failure.code, failure.http_status) == (grpc.StatusCode.RESOURCE_EXHAUSTED, 413)
    assert failure_for(RuntimeError("bug"), "rid").http_status == 500


def test_bearer_token_over_http(
    demo_settings: Settings, helpers: SimpleNamespace, digits_instance: np.ndarray
) -> None:
    settings = dataclasses.replace(demo_settings, http_address="127.0.0.1:0", token=TOKEN)
    server = helpers.start_server(settings)
    try:
        port = server.http_port
        body = {"instances": digits_instance.tolist(), "parameters": {"samples": 2}}
        status, headers, document = _request(port, "POST", "/v1/models/digits_cnn:explain", body)
        assert (status, document["code"]) == (401, "UNAUTHENTICATED") and headers[
            "www-authenticate"
        ] == "Bearer"
        wrong = {"authorization": "Bearer nope"}
        assert _request(port, "POST", "/v1/models/digits_cnn:explain", body, headers=wrong)[0] == 401
        assert _request(port, "GET", "/v2/models/digits_cnn", headers=wrong)[0] == 401
        right = {"authorization": f"Bearer {TOKEN}"}
        assert _request(port, "POST", "/v1/models/digits_cnn:explain", body, headers=right)[0] == 200
        # Probes need no token (as grpc.health.v1 needs none unless auth_health).
        assert _request(port, "GET", "/v2/health/ready")[0] == 200
        assert _request(port, "GET", "/v2/models/digits_cnn/ready")[0] == 200
    finally:
        server.stop(0).wait(10)


def test_readiness_turns_503_while_draining(demo_settings: Settings, helpers: SimpleNamespace) -> None:
    server = helpers.start_server(dataclasses.replace(demo_settings, http_address="127.0.0.1:0"))
    port = server.http_port
    stopped = server.stop(0, drain_s=1.0)
    try:
        assert _request(port, "GET", "/v2/health/ready")[::2] == (503, {"ready": False})
        assert _request(port, "GET", "/v2/models/digits_cnn/ready")[0] == 503
        assert _request(port, "GET", "/v2/health/live")[0] == 200
    finally:
        stopped.wait(10)


def test_http_address_in_use_is_a_clear_error(
    demo_settings: Settings, helpers: SimpleNamespace, http_server: MollifyServer, tmp_path: Path
) -> None:
    settings = dataclasses.replace(demo_settings, http_address=f"127.0.0.1:{http_server.http_port}")
    with pytest.raises(OSError, match="--http-address"):
        helpers.start_server(settings)
