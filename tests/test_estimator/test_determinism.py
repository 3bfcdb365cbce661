"""Same seed ⇒ same numbers whatever the chunk size; every evaluation runs batched (docs/method.md §12)."""

from __future__ import annotations

import numpy as np
import pytest

from estimator import ClassTarget, Method, explain, planned_evaluations
from estimator.explain import ESTIMATOR_BYTES_PER_FEATURE
from estimator.testing import ReluShiftModel, TinyMLP

X = np.array([0.3, -0.4, 0.1, 0.8], dtype=np.float32)

METHODS = {
    "smoothgrad": Method(samples=30),
    "adaptgrad_poisson": Method(kernel="poisson", scale="adaptive", samples=30),
    "truncated_vargrad": Method(scale="truncated", transform="vargrad", samples=30),
    "sig_inner": Method(base="integrated_gradients", ig_steps=5, samples=9, ig_baseline="black"),
    "sig_outer": Method(base="integrated_gradients", ig_steps=5, samples=9, ig_smoothing="outer"),
    "noisegrad": Method(mode="parameter", weight_draws=6),
    "fusion_ig": Method(mode="fusion", base="integrated_gradients", ig_steps=3, samples=4, weight_draws=3),
    "tol": Method(samples=2, tol=0.05, max_samples=200),
    # Past one noise block (64 draws) and one moments group: chunks straddle both boundaries.
    "smoothgrad_blocks": Method(samples=150),
    "gxi_sq_sum_blocks": Method(
        base="gradient_x_input",
        transform="smoothgrad_sq",
        channel_axis=0,
        channel_reduction="sum",
        samples=130,
    ),
    "vargrad_max_abs_blocks": Method(
        transform="vargrad", channel_axis=0, channel_reduction="max_abs", samples=100
    ),
    "sig_outer_blocks": Method(base="integrated_gradients", ig_steps=3, samples=70, ig_smoothing="outer"),
    "sig_inner_blocks": Method(base="integrated_gradients", ig_steps=2, samples=70),
    "fusion_blocks": Method(mode="fusion", samples=70, weight_draws=2),
}


@pytest.mark.parametrize("name", list(METHODS))
def test_chunk_size_does_not_change_the_result(name: str) -> None:
    method = METHODS[name]
    results = []
    for chunk in (1, 7, 64):
        model = TinyMLP(np.random.default_rng(0))
        results.append(
            explain(model, X, method, ClassTarget(1), lower=-1, upper=1, seed=2024, chunk_size=chunk)
        )
    first = results[0]
    for other in results[1:]:
        np.testing.assert_array_equal(other.attribution, first.attribution)
        np.testing.assert_array_equal(other.standard_error, first.standard_error)
        assert other.samples == first.samples
        assert other.inherent_noise == first.inherent_noise
    assert np.all(np.isfinite(first.attribution)) and np.any(first.attribution != 0)


def test_seeds_differ_and_none_draws_a_fresh_seed_that_reproduces() -> None:
    model = ReluShiftModel(0.2, X.shape)
    a = explain(model, X, Method(samples=50), lower=-1, upper=1, seed=1)
    b = explain(model, X, Method(samples=50), lower=-1, upper=1, seed=2)
    assert not np.array_equal(a.attribution, b.attribution)
    fresh = explain(model, X, Method(samples=50), lower=-1, upper=1)
    assert 0 <= fresh.seed < 2**63
    again = explain(model, X, Method(samples=50), lower=-1, upper=1, seed=fresh.seed)
    np.testing.assert_array_equal(fresh.attribution, again.attribution)


def test_sample_noise_depends_only_on_its_index() -> None:
    # The first 20 draws of a 40-draw run are the draws of a 20-draw run.
    short, long = ReluShiftModel(0.2, X.shape), ReluShiftModel(0.2, X.shape)
    short.record.keep_inputs = long.record.keep_inputs = True
    explain(short, X, Method(samples=20), lower=-1, upper=1, seed=9, chunk_size=20)
    explain(long, X, Method(samples=40), lower=-1, upper=1, seed=9, chunk_size=40)
    np.testing.assert_array_equal(short.record.inputs[1], long.record.inputs[1][:20])


def test_evaluations_are_batched_to_the_memory_budget() -> None:
    model = ReluShiftModel(0.2, X.shape)
    per_row = model.bytes_per_sample + ESTIMATOR_BYTES_PER_FEATURE * X.size
    result = explain(
        model, X, Method(samples=50), lower=-1, upper=1, seed=0, memory_budget_bytes=16 * per_row
    )
    # One clean pass, then ceil(50 / 16) chunks: never one call per sample.
    assert model.record.batch_sizes == [1, 16, 16, 16, 2]
    assert result.gradient_evaluations == 51 == planned_evaluations(Method(samples=50))
    assert result.extras["model_calls"] == 5


def test_integrated_gradient_rows_share_chunks() -> None:
    model = ReluShiftModel(0.2, X.shape)
    method = Method(base="integrated_gradients", ig_steps=10, samples=6)
    result = explain(model, X, method, lower=-1, upper=1, seed=0, chunk_size=25)
    assert model.record.batch_sizes == [1, 25, 25, 10]
    assert result.gradient_evaluations == 61 == planned_evaluations(method)


def test_weight_draws_split_calls_but_batch_their_rows() -> None:
    model = TinyMLP(np.random.default_rng(1))
    method = Method(mode="fusion", samples=10, weight_draws=3)
    result = explain(model, X, method, ClassTarget(0), lower=-1, upper=1, seed=0, chunk_size=8)
    assert model.record.batch_sizes == [1, 8, 2, 8, 2, 8, 2]
    assert result.samples == 30 and result.gradient_evaluations == 31


def test_budget_smaller_than_one_row_is_a_limit_error() -> None:
    from estimator import LimitExceededError

    with pytest.raises(LimitExceededError, match="memory_budget_bytes"):
        explain(ReluShiftModel(0.2, X.shape), X, Method(), lower=-1, upper=1, memory_budget_bytes=10)
