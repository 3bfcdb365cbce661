"""Scale policies and inherent noise (docs/method.md §4–5; Zhou et al. 2024, AdaptGrad, Eq. 9–13)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import integrate, special

from estimator import (
    KERNEL_NAMES,
    InvalidArgumentError,
    Method,
    adaptive_scale,
    explain,
    fixed_scale,
    get_kernel,
    inherent_noise,
)
from estimator.testing import ReluShiftModel

LO, HI = -2.12, 2.64  # Zhou et al. 2024, AdaptGrad, Figure 3 (ILSVRC2012 normalised range)


def _mean_over_uniform_x(scale_of_x) -> float:  # type: ignore[no-untyped-def]
    def noise_at(x: float) -> float:
        return float(inherent_noise(x, LO, HI, scale_of_x(x)))

    mid = 0.5 * (LO + HI)
    return integrate.quad(noise_at, LO, HI, points=[mid], limit=200)[0] / (HI - LO)


def test_smoothgrad_inherent_noise_matches_the_paper() -> None:
    eps = fixed_scale(LO, HI, alpha=0.2)
    assert _mean_over_uniform_x(lambda x: eps) == pytest.approx(0.1596, abs=5e-5)


def test_adaptgrad_inherent_noise_matches_the_exact_integral() -> None:
    value = _mean_over_uniform_x(lambda x: adaptive_scale(x, LO, HI, confidence=0.95))
    assert value == pytest.approx(0.01335, abs=5e-6)


def test_adaptive_scale_is_equation_13_for_the_gaussian() -> None:
    x = np.array([-2.0, -0.5, 0.0, 1.7, 2.6])
    d = np.minimum(np.abs(x - LO), np.abs(x - HI))
    for c in (0.9, 0.95, 0.99):
        np.testing.assert_allclose(
            adaptive_scale(x, LO, HI, confidence=c),
            d / (np.sqrt(2) * special.erfinv((1 + c) / 2)),
            rtol=1e-12,
        )
        np.testing.assert_allclose(
            adaptive_scale(x, LO, HI, confidence=c, rule="two_sided"),
            d / (np.sqrt(2) * special.erfinv(c)),
            rtol=1e-12,
        )


@pytest.mark.parametrize("name", KERNEL_NAMES)
def test_adaptive_scale_bounds_the_nearer_edge_for_every_kernel(name: str) -> None:
    x = np.array([-1.9, 0.1, 2.5])
    eps = adaptive_scale(x, LO, HI, confidence=0.95, kernel=name)
    d = np.minimum(x - LO, HI - x)
    # One-sided rule: the chance of crossing the nearer bound is (1 − c)/4.
    np.testing.assert_allclose(1 - get_kernel(name).cdf(d / eps), 0.0125, rtol=1e-9)
    assert np.all(inherent_noise(x, LO, HI, eps, name) <= 0.025 + 1e-12)


def test_adaptive_scale_is_zero_at_a_bound_and_gives_no_inherent_noise() -> None:
    x = np.array([LO, HI, 0.0])
    eps = adaptive_scale(x, LO, HI)
    assert eps[0] == 0.0 and eps[1] == 0.0 and eps[2] > 0
    np.testing.assert_array_equal(inherent_noise(x, LO, HI, eps)[:2], [0.0, 0.0])


def test_fixed_scale_alpha_sigma_and_per_feature_bounds() -> None:
    lower = np.array([0.0, -1.0, 10.0])
    upper = np.array([1.0, 1.0, 20.0])
    np.testing.assert_allclose(fixed_scale(lower, upper, alpha=0.1), [0.1, 0.2, 1.0])
    np.testing.assert_allclose(fixed_scale(lower, upper, sigma=0.3), [0.3, 0.3, 0.3])
    np.testing.assert_allclose(fixed_scale(lower, upper, sigma=np.array([0.0, 0.5, 2.0])), [0.0, 0.5, 2.0])
    assert fixed_scale(0.0, 1.0, shape=(2, 3)).shape == (2, 3)


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"lower": 1.0, "upper": 1.0}, "lower"),
        ({"lower": np.array([0.0, 2.0]), "upper": 1.0}, "lower"),
        ({"lower": 0.0, "upper": 1.0, "alpha": 0.0}, "alpha"),
        ({"lower": 0.0, "upper": 1.0, "sigma": -0.1}, "sigma"),
        ({"lower": 0.0, "upper": np.nan}, "upper"),
    ],
)
def test_fixed_scale_rejects_bad_arguments(kwargs: dict, field: str) -> None:
    with pytest.raises(InvalidArgumentError, match=field):
        fixed_scale(**kwargs)


def test_adaptive_scale_rejects_bad_confidence_and_rule() -> None:
    with pytest.raises(InvalidArgumentError, match="confidence.*got 1.0"):
        adaptive_scale(0.0, LO, HI, confidence=1.0)
    with pytest.raises(InvalidArgumentError, match="adaptive_rule"):
        adaptive_scale(0.0, LO, HI, rule="both")
    with pytest.raises(InvalidArgumentError, match="kernel"):
        adaptive_scale(0.0, LO, HI, kernel="cosine")


def test_inherent_noise_for_heavy_tailed_kernels_exceeds_the_gaussian() -> None:
    x = np.linspace(LO + 0.1, HI - 0.1, 9)
    eps = fixed_scale(LO, HI)
    gaussian = inherent_noise(x, LO, HI, eps, "gaussian").mean()
    assert inherent_noise(x, LO, HI, eps, "poisson").mean() > gaussian
    assert inherent_noise(x, LO, HI, np.zeros_like(x)).max() == 0.0


@pytest.mark.parametrize("name", KERNEL_NAMES)
def test_truncated_sampling_never_leaves_the_domain(name: str) -> None:
    model = ReluShiftModel(0.0, (6,))
    model.record.keep_inputs = True
    x = np.array([LO, LO + 1e-3, -0.3, 0.0, HI - 1e-3, HI], dtype=np.float32)
    result = explain(
        model, x, Method(kernel=name, scale="truncated", alpha=0.5, samples=400), lower=LO, upper=HI, seed=5
    )
    seen = np.concatenate(model.record.inputs[1:])
    assert np.count_nonzero(seen < np.float32(LO)) == 0
    assert np.count_nonzero(seen > np.float32(HI)) == 0
    assert result.inherent_noise == 0.0
    # Still noisy where there is room on both sides, and one-sided at the bounds.
    spread = seen.std(axis=0)
    assert spread[3] > 0.3
    assert np.all(seen[:, 0] >= np.float32(LO)) and seen[:, 0].max() > LO + 0.1


def test_fixed_policy_inherent_noise_is_reported_and_matches_eq_10() -> None:
    x = np.array([-1.0, 0.5, 2.0], dtype=np.float32)
    result = explain(ReluShiftModel(0.0, (3,)), x, Method(samples=4), lower=LO, upper=HI, seed=1)
    eps = 0.2 * (HI - LO)
    expected = 1 - 0.5 * special.erf((HI - x.astype(float)) / (np.sqrt(2) * eps))
    expected += 0.5 * special.erf((LO - x.astype(float)) / (np.sqrt(2) * eps))
    assert result.inherent_noise == pytest.approx(expected.mean(), rel=1e-6)
    none = explain(ReluShiftModel(0.0, (3,)), x, Method(mode="none"), lower=LO, upper=HI, seed=1)
    assert none.inherent_noise == 0.0
