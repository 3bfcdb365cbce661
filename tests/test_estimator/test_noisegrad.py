"""NoiseGrad and FusionGrad (Bykov et al. 2022), with regression tests for the reference code's defects:
compounding weight noise, weights not restored, multiplicative input noise in FusionGrad, N = M only."""

from __future__ import annotations

import numpy as np
import pytest

from estimator import ClassTarget, InvalidArgumentError, Method, explain
from estimator.testing import ReluShiftModel, TinyMLP

X = np.array([0.3, -0.4, 0.1, 0.8], dtype=np.float32)


def _relative_perturbations(model: TinyMLP, overrides: dict[str, np.ndarray]) -> np.ndarray:
    return np.concatenate(
        [
            (overrides[k].astype(np.float64) / model.weights[k].astype(np.float64) - 1.0).ravel()
            for k in overrides
        ]
    )


def test_weight_draws_start_from_the_clean_weights_every_time() -> None:
    model = TinyMLP(np.random.default_rng(0), inputs=4, hidden=32, outputs=3)
    sigma, draws = 0.2, 12
    explain(
        model,
        X,
        Method(mode="parameter", weight_draws=draws, weight_sigma=sigma),
        ClassTarget(0),
        lower=-1,
        upper=1,
        seed=3,
    )
    assert model.record.overrides[0] is None  # the clean pass
    drawn = [o for o in model.record.overrides[1:] if o is not None]
    assert len(drawn) == draws
    spreads = [_relative_perturbations(model, o).std() for o in drawn]
    # Compounding would grow the spread like σ·√m; every draw keeps it at σ.
    np.testing.assert_allclose(spreads, sigma, rtol=0.25)
    assert abs(spreads[-1] - spreads[0]) < 0.1 * sigma
    # Distinct draws.
    assert not np.array_equal(drawn[0]["w1"], drawn[1]["w1"])


def test_clean_weights_are_bitwise_unchanged_after_the_call() -> None:
    model = TinyMLP(np.random.default_rng(1))
    before = {k: v.copy() for k, v in model.weights.items()}
    first = explain(
        model, X, Method(mode="fusion", samples=3, weight_draws=4), ClassTarget(2), lower=-1, upper=1, seed=5
    )
    for k, v in model.weights.items():
        assert v.tobytes() == before[k].tobytes()
    second = explain(
        model, X, Method(mode="fusion", samples=3, weight_draws=4), ClassTarget(2), lower=-1, upper=1, seed=5
    )
    np.testing.assert_array_equal(first.attribution, second.attribution)


def test_fusion_input_noise_is_additive() -> None:
    model = TinyMLP(np.random.default_rng(2))
    model.record.keep_inputs = True
    x = np.array([40.0, 0.01, -25.0, 0.0], dtype=np.float32)
    sigma = 0.5
    explain(
        model,
        x,
        Method(mode="fusion", sigma=sigma, samples=200, weight_draws=2),
        ClassTarget(0),
        lower=-100,
        upper=100,
        seed=7,
    )
    offsets = np.concatenate(model.record.inputs[1:]).astype(np.float64) - x.astype(np.float64)
    # Multiplicative noise would scale with |x| (and vanish at 0); additive noise has sd σ everywhere.
    np.testing.assert_allclose(offsets.std(axis=0), sigma, rtol=0.1)
    np.testing.assert_allclose(offsets.mean(axis=0), 0.0, atol=4 * sigma / np.sqrt(400))


def test_fusion_with_n_different_from_m() -> None:
    model = TinyMLP(np.random.default_rng(3))
    result = explain(
        model,
        X,
        Method(mode="fusion", samples=3, weight_draws=5),
        ClassTarget(1),
        lower=-1,
        upper=1,
        seed=0,
        chunk_size=2,
    )
    assert result.samples == 15
    assert result.gradient_evaluations == 16
    assert result.extras["units"] == 5
    # Rows of one call always share one weight draw.
    assert model.record.batch_sizes == [1] + [2, 1] * 5
    draws = model.record.overrides[1:]
    for a, b in zip(draws[0::2], draws[1::2], strict=True):
        assert a is not None and b is not None and np.array_equal(a["w1"], b["w1"])
    assert np.all(np.isfinite(result.standard_error)) and np.all(result.standard_error > 0)


def test_zero_weight_sigma_reduces_noisegrad_to_the_gradient() -> None:
    model = TinyMLP(np.random.default_rng(4))
    plain = explain(model, X, Method(mode="none"), ClassTarget(0), lower=-1, upper=1)
    noisy = explain(
        model,
        X,
        Method(mode="parameter", weight_sigma=0.0, weight_draws=3),
        ClassTarget(0),
        lower=-1,
        upper=1,
        seed=1,
    )
    np.testing.assert_allclose(noisy.attribution, plain.attribution, rtol=1e-12)


def test_exclude_patterns_leave_weights_clean() -> None:
    model = TinyMLP(np.random.default_rng(5))
    explain(
        model,
        X,
        Method(mode="parameter", weight_draws=2, weight_exclude=("b*",)),
        ClassTarget(0),
        lower=-1,
        upper=1,
        seed=1,
    )
    for overrides in model.record.overrides[1:]:
        assert overrides is not None and set(overrides) == {"w1", "w2"}


def test_excluding_the_same_tensor_keeps_the_others_noise() -> None:
    a, b = TinyMLP(np.random.default_rng(6)), TinyMLP(np.random.default_rng(6))
    explain(a, X, Method(mode="parameter", weight_draws=2), ClassTarget(0), lower=-1, upper=1, seed=4)
    explain(
        b,
        X,
        Method(mode="parameter", weight_draws=2, weight_exclude=("b1",)),
        ClassTarget(0),
        lower=-1,
        upper=1,
        seed=4,
    )
    oa, ob = a.record.overrides[1], b.record.overrides[1]
    assert oa is not None and ob is not None
    np.testing.assert_array_equal(oa["w2"], ob["w2"])


def test_parameter_noise_needs_weights() -> None:
    with pytest.raises(InvalidArgumentError, match="weight_exclude"):
        explain(ReluShiftModel(0.0, X.shape), X, Method(mode="parameter"), lower=-1, upper=1)
    with pytest.raises(InvalidArgumentError, match="weight_exclude"):
        explain(
            TinyMLP(np.random.default_rng(0)),
            X,
            Method(mode="parameter", weight_exclude=("*",)),
            lower=-1,
            upper=1,
        )


def test_noisegrad_standard_error_is_calibrated() -> None:
    model = TinyMLP(np.random.default_rng(8))
    method = Method(mode="parameter", weight_draws=30, weight_sigma=0.3)
    runs = [explain(model, X, method, ClassTarget(0), lower=-1, upper=1, seed=s) for s in range(200)]
    spread = np.stack([r.attribution for r in runs]).std(axis=0, ddof=1)
    reported = np.stack([r.standard_error for r in runs]).mean(axis=0)
    np.testing.assert_allclose(spread / reported, 1.0, atol=0.2)
