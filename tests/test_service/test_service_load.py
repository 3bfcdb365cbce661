"""Load, deadlines and cancellation against a slow fake model (10 ms per gradient call, one sample
per call): overload is refused at once, nothing hangs or is lost, and every way a request can end
early frees its computing slot."""

from __future__ import annotations

import contextlib
import logging
import threading
import time
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

from estimator.gradient_model import GradientBatch
from estimator.method import Method
from service.client import ExplainerClient, ExplainProgress, MollifyError
from service.server import MollifyServer
from service.settings import Settings
from tests.support import wait_until

X = np.full((1, 4), 0.25, np.float32)


class ExplodingModel:
    provider = "FakeExecutionProvider"
    input_shape = (4,)
    output_shape = (3,)
    bytes_per_sample = 1 << 20
    weights: dict[str, np.ndarray] = {}

    def __call__(self, inputs: np.ndarray, cotangents: np.ndarray, weight_overrides: Any = None) -> Any:
        raise RuntimeError("secret internal detail")


class BuggyModel(ExplodingModel):
    """Loads and computes fine, then the service trips over it: stands in for a bug in the service."""

    reads = 0

    @property
    def provider(self) -> str:  # type: ignore[override]
        self.reads += 1
        if self.reads > 1:  # the first read is the repository's, at load
            raise KeyError("secret bug detail")
        return "FakeExecutionProvider"

    def __call__(self, inputs: np.ndarray, cotangents: np.ndarray, weight_overrides: Any = None) -> Any:
        return GradientBatch(outputs=inputs[:, :3] * 1.0, gradients=np.zeros_like(inputs))


class HugeModel(ExplodingModel):
    """Needs more memory for one sample than the server's budget."""

    bytes_per_sample = 1 << 40


@pytest.fixture(scope="module")
def slow_server(
    tmp_path_factory: pytest.TempPathFactory, helpers: SimpleNamespace
) -> Iterator[MollifyServer]:
    root: Path = tmp_path_factory.mktemp("slow-repository")
    helpers.write_model(root, "slow")
    helpers.write_model(root, "exploding")
    helpers.write_model(root, "buggy")
    helpers.write_model(root, "huge")
    models: dict[str, Any] = {}

    def factory(model_bytes: bytes, model: Any, config: Any) -> Any:
        fakes = {"exploding": ExplodingModel, "buggy": BuggyModel, "huge": HugeModel}
        models[config.name] = fakes.get(config.name, lambda: helpers.SlowLinearModel(delay_s=0.01))()
        return models[config.name]

    settings = Settings(
        address="127.0.0.1:0",
        model_repository=root,
        cache_dir=tmp_path_factory.mktemp("slow-cache"),
        memory_budget_bytes=(1 << 20) + (1 << 19),
        max_concurrent_requests=1,
        max_queued_requests=2,
        max_evaluations=100_000,
    )
    server = helpers.start_server(settings, session_factory=factory)
    server.fakes = models  # type: ignore[attr-defined]
    yield server
    server.stop(0).wait()


@pytest.fixture()
def slow_client(slow_server: MollifyServer) -> Iterator[ExplainerClient]:
    with ExplainerClient(f"127.0.0.1:{slow_server.port}", timeout=30) as client:
        yield client


def _idle(server: MollifyServer) -> bool:
    return server.scheduler.computing == 0 and server.scheduler.queued == 0


def test_overload_is_refused_at_once_and_nothing_is_lost(
    slow_server: MollifyServer, slow_client: ExplainerClient
) -> None:
    def one(_: int) -> str:
        try:
            slow_client.explain("slow", X, method=Method(samples=15), seed=1)
            return "OK"
        except MollifyError as err:
            return err.code

    with ThreadPoolExecutor(16) as pool:
        codes = list(pool.map(one, range(16)))
    assert set(codes) <= {"OK", "RESOURCE_EXHAUSTED"}, codes
    assert codes.count("OK") >= 1 and codes.count("RESOURCE_EXHAUSTED") >= 1, codes
    wait_until(lambda: _idle(slow_server), 5, "every slot and queue place to be free")
    assert slow_client.explain("slow", X, method=Method(samples=2), seed=1)[0].samples == 2


def test_a_refusal_does_not_wait_for_a_slot(slow_server: MollifyServer, slow_client: ExplainerClient) -> None:
    """With the slot and both queue places held by work that does not end soon, one more request is
    refused while all of them are still held: it was refused at once, not after waiting for a slot."""

    def hold() -> None:
        with contextlib.suppress(MollifyError):  # ends by its deadline, long after the check below
            slow_client.explain("slow", X, method=Method(samples=50_000), seed=9, timeout=10)

    def held() -> int:
        return slow_server.scheduler.computing + slow_server.scheduler.queued

    holders = [threading.Thread(target=hold, daemon=True) for _ in range(3)]
    for count, holder in enumerate(holders, start=1):
        holder.start()
        wait_until(lambda: held() == count, 5, f"{count} requests to hold the slot and queue")  # noqa: B023
    with pytest.raises(MollifyError) as caught:
        slow_client.explain("slow", X, method=Method(samples=2), seed=1)
    assert caught.value.code == "RESOURCE_EXHAUSTED"
    assert (slow_server.scheduler.computing, slow_server.scheduler.queued) == (1, 2)  # nothing was freed
    for holder in holders:
        holder.join(30)
    wait_until(lambda: _idle(slow_server), 5, "every slot and queue place to be free")


def test_deadline_shorter_than_the_work_frees_the_slot(
    slow_server: MollifyServer, slow_client: ExplainerClient
) -> None:
    with pytest.raises(MollifyError) as caught:
        slow_client.explain("slow", X, method=Method(samples=400), timeout=0.3)
    assert caught.value.code == "DEADLINE_EXCEEDED"
    wait_until(lambda: _idle(slow_server), 2.0, "the work to stop at the next chunk")
    fake = slow_server.fakes["slow"]  # type: ignore[attr-defined]
    calls = fake.calls
    time.sleep(0.1)  # an observation window: no call may come in it (an absence has no event to wait on)
    assert fake.calls == calls, "the model is still being called after the deadline"
    assert slow_client.explain("slow", X, method=Method(samples=3), seed=2)[0].samples == 3


def test_queued_request_whose_deadline_passes_leaves_the_queue(
    slow_server: MollifyServer, slow_client: ExplainerClient
) -> None:
    blocker = threading.Thread(
        target=lambda: slow_client.explain("slow", X, method=Method(samples=60), seed=3), daemon=True
    )
    blocker.start()
    wait_until(lambda: slow_server.scheduler.computing > 0, 5, "the blocker to compute")
    with pytest.raises(MollifyError) as caught:
        slow_client.explain("slow", X, method=Method(samples=2), timeout=0.2)
    assert caught.value.code == "DEADLINE_EXCEEDED"
    # The waiter polls its deadline every 20 ms.
    wait_until(lambda: slow_server.scheduler.queued == 0, 2, "the expired request to leave the queue")
    assert (
        slow_server.scheduler.computing == 1
    )  # the blocker still computes: the expired one never got the slot
    blocker.join(10)
    wait_until(lambda: _idle(slow_server), 5, "every slot and queue place to be free")


def test_cancelled_stream_frees_its_slot(slow_server: MollifyServer, slow_client: ExplainerClient) -> None:
    stream = slow_client.explain_stream("slow", X, method=Method(samples=500), seed=4)
    first = next(stream)
    assert isinstance(first, ExplainProgress) and first.samples_done < 500
    stream.close()  # type: ignore[attr-defined]
    wait_until(lambda: _idle(slow_server), 2.0, "the cancelled stream to free its slot")
    assert slow_client.explain("slow", X, method=Method(samples=2), seed=5)[0].samples == 2


@pytest.mark.parametrize("model", ["exploding", "buggy"])
def test_failures_inside_are_internal_with_a_request_id_only(
    slow_client: ExplainerClient, model: str, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="mollify"), pytest.raises(MollifyError) as caught:
        slow_client.explain(model, X, method=Method(samples=2))
    assert caught.value.code == "INTERNAL"
    assert "secret" not in caught.value.message
    assert caught.value.request_id and caught.value.request_id in caught.value.message
    logged = [r for r in caplog.records if getattr(r, "request_id", None) == caught.value.request_id]
    assert any("secret" in (str(getattr(r, "error", "")) + str(r.exc_info)) for r in logged)


def test_memory_budget_refusal_names_the_setting(slow_client: ExplainerClient) -> None:
    with pytest.raises(MollifyError) as caught:
        slow_client.explain("huge", X, method=Method(samples=2))
    assert caught.value.code == "RESOURCE_EXHAUSTED"
    assert "--memory-budget-bytes / MOLLIFY_MEMORY_BUDGET_BYTES" in caught.value.message


def test_metrics_count_requests_and_work(slow_server: MollifyServer, slow_client: ExplainerClient) -> None:
    slow_client.explain("slow", X, method=Method(samples=5), seed=6)
    with pytest.raises(MollifyError):
        slow_client.explain("missing", X)
    port = slow_server.metrics.serve("127.0.0.1", 0)
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    assert 'mollify_requests_total{code="OK",method="Explain"}' in text
    assert 'mollify_requests_total{code="NOT_FOUND",method="Explain"}' in text
    assert 'mollify_samples_total{model="slow"}' in text
    assert "mollify_gradient_evaluations_total" in text and "mollify_queue_depth 0.0" in text
    assert "mollify_request_duration_seconds_bucket" in text
    slow_server.metrics.stop()
