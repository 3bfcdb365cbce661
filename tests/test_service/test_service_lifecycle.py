"""The server's life on loopback: overall health follows the models, a stop drains (health
NOT_SERVING while still serving), closes, grants the grace period and then cuts off what is left
with UNAVAILABLE; the memory budget is chosen from the memory the process may use and said at start."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from estimator.method import Method
from service.client import ExplainerClient, MollifyError
from service.server import SERVICE_NAME, MollifyServer
from service.settings import Settings
from tests.support import wait_until

X = np.full((1, 4), 0.25, np.float32)


def _health(port: int, service: str = "") -> str:
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        reply = health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service=service), timeout=10
        )
    return str(health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status))


def _settings(root: Path, tmp_path: Path, **changes: Any) -> Settings:
    values: dict[str, Any] = {
        "address": "127.0.0.1:0",
        "model_repository": root,
        "cache_dir": tmp_path / "cache",
        "memory_budget_bytes": (1 << 20) + (1 << 19),
        "max_concurrent_requests": 1,
        "max_queued_requests": 4,
        "max_evaluations": 1_000_000,
    }
    values.update(changes)
    return Settings(**values)


# ------------------------------------------------------------------------------------------ health


def test_overall_health_is_not_serving_while_no_model_is_ready(
    tmp_path: Path, helpers: SimpleNamespace
) -> None:
    root = tmp_path / "models"
    helpers.write_model(root, "broken", b"this is not an ONNX file")
    server = helpers.start_server(_settings(root, tmp_path))
    try:
        assert [m.ready for m in server.repository.list_models()] == [False]
        assert _health(server.port) == "NOT_SERVING"
        assert _health(server.port, SERVICE_NAME) == "NOT_SERVING"
        assert _health(server.port, "broken") == "NOT_SERVING"

        helpers.write_model(root, "good")
        server.reload_models()
        assert _health(server.port) == "SERVING"
        assert _health(server.port, SERVICE_NAME) == "SERVING"
        assert (_health(server.port, "good"), _health(server.port, "broken")) == ("SERVING", "NOT_SERVING")

        (root / "good" / "model.onnx").write_bytes(b"broken now")
        server.reload_models()
        # Its last good version keeps serving while its changed files fail to load.
        assert (_health(server.port), _health(server.port, "good")) == ("SERVING", "SERVING")
        (root / "good" / "model.onnx").unlink()
        (root / "good" / "config.json").unlink()
        server.reload_models()
        assert _health(server.port) == "NOT_SERVING"
    finally:
        server.stop(0).wait(10)


def test_health_is_not_serving_before_start(tmp_path: Path, helpers: SimpleNamespace) -> None:
    from service.server import create_server

    root = tmp_path / "models"
    helpers.write_model(root, "good")
    server, _ = create_server(_settings(root, tmp_path))
    try:
        assert server.health.Check(health_pb2.HealthCheckRequest(service=""), None).status == (
            health_pb2.HealthCheckResponse.NOT_SERVING
        )
        server.start()
        assert _health(server.port) == "SERVING"
    finally:
        server.stop(0).wait(10)


# ---------------------------------------------------------------------------------------- stopping


@pytest.fixture()
def slow_server(tmp_path: Path, helpers: SimpleNamespace) -> Iterator[MollifyServer]:
    root = tmp_path / "models"
    helpers.write_model(root, "slow")
    server = helpers.start_server(
        _settings(root, tmp_path, max_concurrent_requests=2), session_factory=helpers.slow_factory(0.01)
    )
    yield server
    server.stop(0).wait(10)


def _explain_in_background(port: int, samples: int, results: dict[str, Any], key: str) -> threading.Thread:
    def run() -> None:
        with ExplainerClient(f"127.0.0.1:{port}", timeout=60) as client:
            try:
                results[key] = client.explain("slow", X, method=Method(samples=samples), seed=1)
            except MollifyError as error:
                results[key] = error

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def test_stop_drains_then_grants_the_grace_then_cuts_off_with_unavailable(
    slow_server: MollifyServer, caplog: pytest.LogCaptureFixture
) -> None:
    port = slow_server.port
    results: dict[str, Any] = {}
    long = _explain_in_background(port, 100_000, results, "long")  # ~1000 s of 10 ms calls: never finishes
    wait_until(lambda: slow_server.scheduler.computing == 1, 10, "the long explanation to start")

    with caplog.at_level(logging.INFO, logger="mollify"):
        started = time.monotonic()
        stopped = slow_server.stop(0.5, drain_s=1.5)
        # Draining: health says NOT_SERVING at once, yet calls are still answered in full.
        assert _health(port) == "NOT_SERVING" and _health(port, "slow") == "NOT_SERVING"
        with ExplainerClient(f"127.0.0.1:{port}", timeout=30) as client:
            [short] = client.explain("slow", X, method=Method(samples=3), seed=2)
            assert short.samples == 3
            assert [m.name for m in client.list_models()] == ["slow"]
        assert not stopped.is_set()  # still within the drain delay
        assert stopped.wait(15)
        elapsed = time.monotonic() - started
        long.join(10)

    assert elapsed >= 2.0  # drain 1.5 s + grace 0.5 s were granted before the cut-off
    error = results["long"]
    assert isinstance(error, MollifyError) and error.code == "UNAVAILABLE", error
    assert "--grace-period-s / MOLLIFY_GRACE_PERIOD_S" in error.message
    logged = [r for r in caplog.records if getattr(r, "request_id", None) == error.request_id]
    assert [r.code for r in logged] == ["UNAVAILABLE"]  # type: ignore[attr-defined]
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert slow_server.scheduler.computing == 0 and slow_server.scheduler.queued == 0


def test_work_that_ends_within_the_grace_is_answered(slow_server: MollifyServer) -> None:
    results: dict[str, Any] = {}
    thread = _explain_in_background(slow_server.port, 40, results, "short")  # ~0.4 s
    wait_until(lambda: slow_server.scheduler.computing == 1, 10, "the explanation to start")
    assert slow_server.stop(10, drain_s=0).wait(15)
    thread.join(10)
    [result] = results["short"]
    assert result.samples == 40


def test_a_second_stop_skips_the_drain_and_the_grace(
    slow_server: MollifyServer, caplog: pytest.LogCaptureFixture
) -> None:
    results: dict[str, Any] = {}
    thread = _explain_in_background(slow_server.port, 100_000, results, "long")
    wait_until(lambda: slow_server.scheduler.computing == 1, 10, "the explanation to start")
    with caplog.at_level(logging.INFO, logger="mollify"):
        stopped = slow_server.stop(60, drain_s=60)
        wait_until(
            lambda: any(r.getMessage().startswith("draining") for r in caplog.records),
            10,
            "the first stop to drain",
        )
    assert slow_server.stop(0) is stopped
    assert stopped.wait(10)  # well before the first stop's 60 s drain and 60 s grace
    thread.join(10)
    assert isinstance(results["long"], MollifyError) and results["long"].code == "UNAVAILABLE"
