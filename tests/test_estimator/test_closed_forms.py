"""Closed forms: mollified ReLU gradients for every kernel, calibrated standard errors, unbiasedness
and N^(-1/2) convergence (docs/method.md §2)."""

from __future__ import annotations

import numpy as np
import pytest

from estimator import KERNEL_NAMES, ClassTarget, Method, explain, get_kernel
from estimator.testing import LinearModel, QuadraticModel, ReluShiftModel

X = np.array([-0.6, -0.2, 0.1, 0.25, 0.45, 0.8], dtype=np.float32)
THRESHOLD = 0.2
ALPHA = 0.2  # ε = 0.4 on [-1, 1]


@pytest.mark.parametrize("name", KERNEL_NAMES)
def test_relu_mollified_gradient_is_the_kernel_cdf(name: str) -> None:
    model = ReluShiftModel(THRESHOLD, X.shape)
    result = explain(model, X, Method(kernel=name, alpha=ALPHA, samples=3000), lower=-1, upper=1, seed=11)
    exact = get_kernel(name).cdf((X.astype(np.float64) - THRESHOLD) / (ALPHA * 2.0))
    random = result.standard_error > 0
    z = np.abs(result.attribution - exact)[random] / result.standard_error[random]
    assert np.all(z < 4.0), z
    # Where the kernel never reaches the kink (rect) the estimate is exact and the error is 0.
    np.testing.assert_array_equal(result.attribution[~random], exact[~random])
    assert result.samples == 3000 and result.gradient_evaluations == 3001


def test_relu_adaptive_scale_closed_form() -> None:
    model = ReluShiftModel(THRESHOLD, X.shape)
    result = explain(model, X, Method(scale="adaptive", samples=3000), lower=-1, upper=1, seed=2)
    d = np.minimum(X + 1.0, 1.0 - X).astype(np.float64)
    eps = d / get_kernel("gaussian").ppf(0.9875)
    exact = get_kernel("gaussian").cdf((X.astype(np.float64) - THRESHOLD) / eps)
    error = np.abs(result.attribution - exact)
    # A feature whose kink is out of reach has no hits among 3000 draws: SE 0, error below 1/N.
    assert np.all((error < 4.0 * result.standard_error) | ((result.standard_error == 0) & (error < 1 / 3000)))


def test_reported_standard_error_matches_the_spread_over_seeds() -> None:
    model = ReluShiftModel(THRESHOLD, X.shape)
    method = Method(kernel="sigmoid", alpha=ALPHA, samples=100)
    runs = [explain(model, X, method, lower=-1, upper=1, seed=seed) for seed in range(400)]
    estimates = np.stack([r.attribution for r in runs])
    reported = np.stack([r.standard_error for r in runs]).mean(axis=0)
    ratio = estimates.std(axis=0, ddof=1) / reported
    assert np.all(np.abs(ratio - 1.0) < 0.15), ratio


def test_unbiased_with_root_n_convergence_on_a_quadratic() -> None:
    rng = np.random.default_rng(0)
    a = rng.standard_normal((4, 4))
    model = QuadraticModel(a @ a.T)
    x = np.array([0.3, -0.2, 0.5, 0.1], dtype=np.float32)
    exact = model.a @ x.astype(np.float64)  # the gradient is linear: smoothing leaves its mean unchanged
    sigma = 0.5
    noise_sd = np.sqrt((model.a**2).sum(axis=1)) * sigma  # per-feature sd of A u, u ~ N(0, σ² I)
    rms = {}
    for n in (8, 128):
        method = Method(sigma=sigma, samples=n)
        runs = np.stack(
            [explain(model, x, method, lower=-5, upper=5, seed=seed).attribution for seed in range(150)]
        )
        bias = runs.mean(axis=0) - exact
        assert np.all(np.abs(bias) < 4 * noise_sd / np.sqrt(n * 150))
        rms[n] = np.sqrt(((runs - exact) ** 2).mean(axis=0))
        np.testing.assert_allclose(rms[n], noise_sd / np.sqrt(n), rtol=0.2)
    np.testing.assert_allclose(rms[8] / rms[128], 4.0, rtol=0.2)


def test_smoothgrad_with_vanishing_sigma_is_the_gradient() -> None:
    rng = np.random.default_rng(1)
    model = LinearModel(rng.standard_normal((3, 5)))
    x = rng.standard_normal(5).astype(np.float32)
    plain = explain(model, x, Method(mode="none"), ClassTarget(1), lower=-10, upper=10)
    smooth = explain(model, x, Method(sigma=1e-12, samples=16), ClassTarget(1), lower=-10, upper=10, seed=0)
    np.testing.assert_array_equal(smooth.attribution, plain.attribution)
    np.testing.assert_array_equal(smooth.standard_error, np.zeros(5))
    assert plain.gradient_evaluations == 1 and plain.relative_error == 0.0
    np.testing.assert_allclose(plain.attribution, model.w[1].astype(np.float32), rtol=1e-7)


def test_gradient_x_input_uses_the_noisy_point() -> None:
    rng = np.random.default_rng(3)
    model = LinearModel(rng.standard_normal((2, 3)))
    x = np.array([0.5, -0.25, 0.75], dtype=np.float32)
    plain = explain(model, x, Method(base="gradient_x_input", mode="none"), ClassTarget(0), lower=-1, upper=1)
    np.testing.assert_allclose(plain.attribution, x * model.w[0].astype(np.float32), rtol=1e-6)
    # E[(x + u) ⊙ g] = x ⊙ g for a constant gradient and zero-mean noise.
    smooth = explain(
        model, x, Method(base="gradient_x_input", samples=4000), ClassTarget(0), lower=-1, upper=1, seed=4
    )
    z = np.abs(smooth.attribution - plain.attribution) / smooth.standard_error
    assert np.all(z < 4.0) and np.all(smooth.standard_error > 0)
