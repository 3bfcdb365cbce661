"""Kernels: density, CDF and quantile agree with each other and with docs/method.md §3; sampling is ε·Q(U)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import integrate, stats

from estimator import KERNEL_NAMES, InvalidArgumentError, get_kernel
from estimator.kernels import open_uniform


def test_registry_names_match_the_spec() -> None:
    assert KERNEL_NAMES == ("gaussian", "poisson", "hyperbolic", "sigmoid", "rect")
    for name in KERNEL_NAMES:
        assert get_kernel(name).name == name


def test_unknown_kernel_lists_the_known_names() -> None:
    with pytest.raises(InvalidArgumentError) as info:
        get_kernel("laplace")
    message = str(info.value)
    assert "kernel" in message and "laplace" in message
    for name in KERNEL_NAMES:
        assert name in message


@pytest.mark.parametrize("name", KERNEL_NAMES)
def test_density_integrates_to_one_and_is_symmetric(name: str) -> None:
    kernel = get_kernel(name)
    pieces = [(-np.inf, -1.0), (-1.0, 1.0), (1.0, np.inf)]
    total = sum(integrate.quad(lambda t: float(kernel.pdf(t)), a, b, limit=200)[0] for a, b in pieces)
    assert total == pytest.approx(1.0, abs=1e-6)
    t = np.linspace(-6, 6, 101)
    np.testing.assert_allclose(kernel.pdf(t), kernel.pdf(-t), rtol=1e-12)
    np.testing.assert_allclose(kernel.cdf(t) + kernel.cdf(-t), 1.0, atol=1e-12)


@pytest.mark.parametrize("name", KERNEL_NAMES)
def test_cdf_is_the_integral_of_the_density(name: str) -> None:
    kernel = get_kernel(name)
    for t in (-2.5, -0.7, 0.0, 0.3, 0.99, 4.0):
        below = integrate.quad(lambda s: float(kernel.pdf(s)), -np.inf, -1.0)[0]
        area = (
            below
            + integrate.quad(lambda s: float(kernel.pdf(s)), -1.0, t, points=[1.0] if t > 1 else None)[0]
        )
        assert float(kernel.cdf(t)) == pytest.approx(area, abs=1e-7)


@pytest.mark.parametrize("name", KERNEL_NAMES)
def test_quantile_inverts_the_cdf(name: str) -> None:
    kernel = get_kernel(name)
    p = np.array([1e-9, 1e-4, 0.025, 0.3, 0.5, 0.8, 0.975, 1 - 1e-6])
    np.testing.assert_allclose(kernel.cdf(kernel.ppf(p)), p, rtol=1e-9, atol=1e-15)


@pytest.mark.parametrize("name", KERNEL_NAMES)
def test_cdf_is_finite_and_exact_in_the_far_tails(name: str) -> None:
    kernel = get_kernel(name)
    with np.errstate(over="raise", invalid="raise", divide="raise"):
        values = kernel.cdf(np.array([-np.inf, -1e6, 1e6, np.inf]))
        assert np.all(np.isfinite(kernel.pdf(np.array([-1e6, 1e6]))))
    assert values[0] == 0.0 and values[-1] == 1.0
    assert 0.0 <= values[1] < 1e-5 and 1 - 1e-5 < values[2] <= 1.0


def test_closed_forms_match_the_spec_table() -> None:
    t = np.array([-1.3, 0.2, 2.0])
    np.testing.assert_allclose(get_kernel("gaussian").cdf(t), stats.norm.cdf(t), rtol=1e-12)
    np.testing.assert_allclose(get_kernel("poisson").cdf(t), 0.5 + np.arctan(t) / np.pi, rtol=1e-12)
    np.testing.assert_allclose(get_kernel("hyperbolic").cdf(t), 2 / np.pi * np.arctan(np.exp(t)), rtol=1e-12)
    np.testing.assert_allclose(get_kernel("sigmoid").cdf(t), 1 / (1 + np.exp(-t)), rtol=1e-12)
    np.testing.assert_allclose(get_kernel("rect").cdf(t), [0.0, 0.6, 1.0], rtol=1e-12)
    np.testing.assert_allclose(get_kernel("hyperbolic").pdf(t), 1 / np.cosh(t) / np.pi, rtol=1e-12)


@pytest.mark.parametrize("name", KERNEL_NAMES)
def test_samples_follow_the_kernel(name: str) -> None:
    kernel = get_kernel(name)
    draws = kernel.sample(20_000, np.random.default_rng(7))
    result = stats.kstest(draws, kernel.cdf)
    assert result.pvalue > 1e-3


def test_open_uniform_never_returns_zero_or_one() -> None:
    class ZeroGenerator:
        def random(self, shape: int) -> np.ndarray:
            return np.zeros(shape)

    values = open_uniform(ZeroGenerator(), 3)  # type: ignore[arg-type]
    assert np.all(values > 0) and np.all(np.isfinite(get_kernel("poisson").ppf(values)))
