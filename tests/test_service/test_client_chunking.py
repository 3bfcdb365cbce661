"""The client splits a request larger than the server's max-instances into several calls, transparently."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from types import SimpleNamespace

import numpy as np
import pytest

from estimator.method import Method
from service.client import ExplainerClient, InstanceExplanation, MollifyError
from service.client_chunks import instance_limit
from service.server import MollifyServer
from service.settings import Settings

METHOD = Method(samples=8)


@pytest.fixture(scope="module")
def small_server(demo_settings: Settings, helpers: SimpleNamespace) -> Iterator[MollifyServer]:
    server = helpers.start_server(dataclasses.replace(demo_settings, max_instances=3))
    yield server
    server.stop(0).wait()


def rows(count: int) -> np.ndarray:
    return np.random.default_rng(0).uniform(-1, 2, size=(count, 30)).astype(np.float32)


def test_a_batch_over_max_instances_gives_one_requests_results(
    small_server: MollifyServer, client: ExplainerClient
) -> None:
    batch = rows(8)
    whole = client.explain("breast_cancer_mlp", batch, method=METHOD, seed=5)  # the demo server takes 64
    with ExplainerClient(f"127.0.0.1:{small_server.port}", timeout=60) as small:
        chunked = small.explain("breast_cancer_mlp", batch, method=METHOD, seed=5)
        assert small._chunks.limit == 3  # learned from the refusal, kept for later calls
        again = small.explain("breast_cancer_mlp", batch[:7], method=METHOD)
    assert [r.instance_index for r in chunked] == list(range(8))
    for a, b in zip(whole, chunked, strict=True):
        np.testing.assert_array_equal(a.attribution, b.attribution)
        assert a.seed == b.seed == 5
    assert [r.instance_index for r in again] == list(range(7)) and len({r.seed for r in again}) == 1


def test_a_streamed_batch_over_max_instances_reports_whole_batch_indices(small_server: MollifyServer) -> None:
    with ExplainerClient(f"127.0.0.1:{small_server.port}", timeout=60) as small:
        events = list(small.explain_stream("breast_cancer_mlp", rows(7), method=METHOD, seed=2))
    progress, results = events[:-1], events[-1]
    assert isinstance(results, list) and [r.instance_index for r in results] == list(range(7))
    assert all(isinstance(r, InstanceExplanation) for r in results)
    assert {e.instance_index for e in progress} == set(range(7))  # type: ignore[union-attr]
    assert {e.explanations_total for e in progress} == {7}  # type: ignore[union-attr]


def test_other_refusals_are_not_chunked(small_server: MollifyServer) -> None:
    assert (
        instance_limit(MollifyError("RESOURCE_EXHAUSTED", "inputs holds 9 instances; the limit is 3 (...)"))
        == 3
    )
    assert instance_limit(MollifyError("RESOURCE_EXHAUSTED", "the server's queue is full")) is None
    with (
        ExplainerClient(f"127.0.0.1:{small_server.port}", timeout=60) as small,
        pytest.raises(MollifyError) as caught,
    ):
        small.explain("breast_cancer_mlp", rows(5), method=Method(samples=10_000), seed=1)
    assert caught.value.code == "RESOURCE_EXHAUSTED" and "gradient evaluations" in caught.value.message
