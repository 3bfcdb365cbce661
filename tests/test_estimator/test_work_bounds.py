"""Every piece of work a request causes is bounded before it starts.

Integrated gradients once built the Gauss–Legendre rule with an n × n eigenproblem and the whole
path (steps × features, float64) before any chunking: 8 000 steps held a server slot for ~53 s and
1.4 GB. Now the rule is capped, large rules are O(n) memory, the path is built per chunk, and
per-channel statistics refuse absurd channel counts instead of listing K² covariance pairs.
"""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest

from estimator import ClassTarget, InvalidArgumentError, Method, explain, planned_evaluations
from estimator.moments import MAX_STATISTIC_CHANNELS, StatisticLayout
from estimator.paths import MAX_GAUSS_LEGENDRE_STEPS, integration_rule
from estimator.testing import ReluShiftModel


def test_gauss_legendre_beyond_the_cap_is_refused_before_any_work() -> None:
    method = Method(base="integrated_gradients", ig_steps=8000)
    with pytest.raises(InvalidArgumentError, match=r"ig_steps: .*at most 1024.*riemann"):
        planned_evaluations(method)
    model = ReluShiftModel(0.0, (4,))
    with pytest.raises(InvalidArgumentError, match="ig_steps"):
        explain(model, np.zeros(4, np.float32), method, lower=-1.0, upper=1.0)
    assert model.record.calls == 0
    # Refused before any model call: the model was never asked for anything.


@pytest.mark.parametrize("steps", [257, 600, MAX_GAUSS_LEGENDRE_STEPS])
def test_large_gauss_legendre_rules_are_exact_for_polynomials(steps: int) -> None:
    weights, alphas = integration_rule("gauss_legendre", steps)
    assert weights.shape == alphas.shape == (steps,)
    assert np.all((alphas > 0) & (alphas < 1)) and np.all(np.diff(np.sort(alphas)) > 0)
    for degree in (0, 1, 7, 100, 2 * steps - 1):
        np.testing.assert_allclose(
            np.sum(weights * alphas**degree), 1.0 / (degree + 1), rtol=1e-10, atol=1e-15
        )
    nodes, numpy_weights = np.polynomial.legendre.leggauss(steps)
    np.testing.assert_allclose(np.sort(alphas), 0.5 * (1 + nodes), atol=1e-13)
    np.testing.assert_allclose(
        weights[np.argsort(alphas)], 0.5 * numpy_weights[np.argsort(nodes)], atol=1e-13
    )


def test_a_long_integrated_gradients_path_is_built_per_chunk() -> None:
    features, steps = 20_000, 2_000  # the whole path would be 320 MB of float64
    x = np.linspace(-1, 1, features).astype(np.float32)
    model = ReluShiftModel(0.0, (features,))
    method = Method(
        base="integrated_gradients",
        mode="input",
        samples=1,
        ig_steps=steps,
        ig_rule="riemann_trapezoid",
        ig_smoothing="inner",
    )
    tracemalloc.start()
    try:
        result = explain(model, x, method, ClassTarget(0), lower=-1.0, upper=1.0, seed=0, chunk_size=64)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 100 * 2**20, f"peak {peak / 2**20:.0f} MiB"
    assert result.gradient_evaluations == steps + 1 and 0.0 < result.inherent_noise < 1.0


def test_per_channel_statistics_of_a_huge_axis_are_refused_but_linear_reductions_run() -> None:
    shape = (MAX_STATISTIC_CHANNELS + 1,)
    x = np.zeros(shape, np.float32)
    model = ReluShiftModel(0.5, shape)
    abs_sum = Method(samples=2, transform="abs", channel_axis=0, channel_reduction="sum")
    with pytest.raises(InvalidArgumentError, match=r"method.channel_axis: .*at most 8192 channels"):
        explain(model, x, abs_sum, ClassTarget(0), lower=-1.0, upper=1.0, seed=0)
    linear = Method(samples=2, channel_axis=0, channel_reduction="sum")
    result = explain(model, x, linear, ClassTarget(0), lower=-1.0, upper=1.0, seed=0)
    assert result.attribution.shape == ()
    # Many channels with cross-channel covariances: counted, not listed.
    layout = StatisticLayout((MAX_STATISTIC_CHANNELS, 2), "abs", "sum", 0)
    assert layout.full_pair_count == MAX_STATISTIC_CHANNELS * (MAX_STATISTIC_CHANNELS + 1) // 2
    assert layout.approximate and len(layout.pairs) == MAX_STATISTIC_CHANNELS
