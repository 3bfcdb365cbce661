"""Heavy-tailed (Cauchy) noise stays finite, and a model that still overflows gets a precise status.

Unrestricted Cauchy draws reach offsets of 1e15; the estimator restricts them to a window around the
input. A network that overflows within that window (here ``exp``) answers INVALID_ARGUMENT naming the
kernel, the share of non-finite samples and the remedy, never INTERNAL.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

from estimator.kernels import get_kernel
from estimator.method import Method
from estimator.noise import HEAVY_TAIL_WINDOW, DrawStreams, InputNoise
from service.client import ExplainerClient, MollifyError
from service.settings import Settings


def _exp_model() -> bytes:
    """``logits = [Σ exp(8 x), Σ x]``: finite on [−1, 1], overflows float32 beyond x ≈ 11."""
    graph = helper.make_graph(
        [
            helper.make_node("Mul", ["x", "eight"], ["scaled"]),
            helper.make_node("Exp", ["scaled"], ["grown"]),
            helper.make_node("ReduceSum", ["grown", "axes"], ["total"], keepdims=1),
            helper.make_node("ReduceSum", ["x", "axes"], ["plain"], keepdims=1),
            helper.make_node("Concat", ["total", "plain"], ["logits"], axis=1),
        ],
        "exp_model",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 2])],
        [
            numpy_helper.from_array(np.array(8.0, np.float32), "eight"),
            numpy_helper.from_array(np.array([1], np.int64), "axes"),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 10
    return model.SerializeToString()


def test_cauchy_draws_stay_within_the_window_around_the_input() -> None:
    features = 50_000
    lo, hi = np.full(features, -1.0), np.full(features, 1.0)
    noise = InputNoise(get_kernel("poisson"), "fixed", lo, hi, 0.4 * np.ones(features), 1.0)
    draws = DrawStreams(noise, seed=4).rows(0, 0, 0, 40)
    center = np.zeros((40, features))
    offsets = noise.offsets(draws, center)
    window = HEAVY_TAIL_WINDOW * 2.0
    assert np.all(np.abs(offsets) <= window) and np.abs(offsets).max() > 0.5 * window
    # Still Cauchy inside the window: the median of |u| is the scale (0.4), within sampling error.
    assert abs(np.median(np.abs(offsets)) - 0.4) < 0.01


@pytest.fixture(scope="module")
def exp_client(tmp_path_factory: pytest.TempPathFactory, demo_settings: Settings, helpers: SimpleNamespace):  # type: ignore[no-untyped-def]
    root: Path = tmp_path_factory.mktemp("heavy-tail-repository")
    helpers.write_model(root, "exp_model", _exp_model(), labels=["exp", "sum"])
    settings = dataclasses.replace(demo_settings, model_repository=root)
    server = helpers.start_server(settings)
    try:
        with ExplainerClient(f"127.0.0.1:{server.port}", timeout=60) as client:
            yield client
    finally:
        server.stop(0).wait()


def test_a_model_overflowing_under_cauchy_noise_gets_invalid_argument_naming_the_kernel(
    exp_client: ExplainerClient,
) -> None:
    x = np.zeros((1, 4), np.float32)
    with pytest.raises(MollifyError) as caught:
        exp_client.explain("exp_model", x, method=Method(kernel="poisson", samples=64), target=0, seed=2)
    assert caught.value.code == "INVALID_ARGUMENT"
    details = caught.value.message
    assert "'poisson' kernel" in details and "noisy samples" in details and "%" in details
    assert "truncated" in details and "gaussian" in details
    # The same model under truncated noise explains fine.
    [result] = exp_client.explain(
        "exp_model", x, method=Method(kernel="poisson", scale="truncated", samples=64), target=0, seed=2
    )
    assert np.all(np.isfinite(result.attribution))


def test_cauchy_noise_on_a_real_network_is_finite(client: ExplainerClient) -> None:
    x = np.full((1, 1, 8, 8), 0.5, np.float32)
    [result] = client.explain("digits_cnn", x, method=Method(kernel="poisson", samples=200), seed=7)
    assert np.all(np.isfinite(result.attribution)) and np.all(np.isfinite(result.standard_error))
    assert 0.0 < result.inherent_noise < 1.0
