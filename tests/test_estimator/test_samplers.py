"""Samplers of input noise: their layouts, honest standard errors, variance reduction, determinism."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from scipy import special

from estimator import ClassTarget, InvalidArgumentError, Method, explain, planned_evaluations
from estimator.kernels import KERNEL_NAMES, get_kernel
from estimator.noise import InputNoise
from estimator.samplers import MAX_SOBOL_DIMENSIONS, SAMPLER_NAMES, SampledDraws, get_sampler
from estimator.testing import QuadraticModel, ReluShiftModel, TinyMLP

D = 40
X = np.linspace(-0.6, 0.6, D).astype(np.float32)
STRUCTURED = ("latin_hypercube", "sobol")


def _noise(kernel: str = "gaussian", policy: str = "fixed", features: int = D) -> InputNoise:
    lo, hi = -np.ones(features), np.ones(features)
    return InputNoise(get_kernel(kernel), policy, lo, hi, 0.4 * np.ones(features), 1.0)


def test_antithetic_pairs_are_reflections_in_both_draw_types() -> None:
    sampler = get_sampler("antithetic")
    gaussian = SampledDraws(_noise(), 3, sampler, 2).rows(0, 0, 0, 10)
    np.testing.assert_array_equal(gaussian[1::2], -gaussian[0::2])
    uniforms = SampledDraws(_noise("sigmoid"), 3, sampler, 2).rows(0, 0, 0, 10)
    np.testing.assert_allclose(uniforms[1::2], 1.0 - uniforms[0::2], rtol=0, atol=1e-16)
    assert np.all((uniforms > 0) & (uniforms < 1))


def test_antithetic_pairs_make_a_linear_gradient_exact() -> None:
    # The gradient A x is linear: every pair's mean is A x exactly (up to float32 inputs).
    rng = np.random.default_rng(0)
    a = rng.normal(size=(D, D))
    model = QuadraticModel(a)
    result = explain(
        model, X, Method(samples=10, sampler="antithetic"), ClassTarget(0), lower=-1.0, upper=1.0, seed=1
    )
    expected = 0.5 * (a + a.T) @ X.astype(np.float64)
    np.testing.assert_allclose(result.attribution, expected, atol=2e-5)
    assert np.max(result.standard_error) < 2e-5
    iid = explain(model, X, Method(samples=10), ClassTarget(0), lower=-1.0, upper=1.0, seed=1)
    assert np.max(iid.standard_error) > 0.05


@pytest.mark.parametrize("name", STRUCTURED)
def test_point_sets_put_one_point_in_each_stratum_of_every_feature(name: str) -> None:
    points = 8
    draws = SampledDraws(_noise(), 5, get_sampler(name), points)
    for unit in range(3):
        z = draws.rows(0, 0, unit * points, (unit + 1) * points).astype(np.float64)
        strata = np.floor(special.ndtr(z) * points).astype(int)
        assert np.all(np.sort(strata, axis=0) == np.arange(points)[:, None]), unit
    # Units are independent randomisations, not copies.
    assert not np.array_equal(draws.rows(0, 0, 0, points), draws.rows(0, 0, points, 2 * points))


@pytest.mark.parametrize("name", SAMPLER_NAMES)
def test_draws_do_not_depend_on_how_they_are_requested(name: str) -> None:
    whole = SampledDraws(_noise("hyperbolic"), 9, get_sampler(name), 4).rows(1, 2, 0, 24)
    pieces = SampledDraws(_noise("hyperbolic"), 9, get_sampler(name), 4)
    parts = [pieces.rows(1, 2, a, b) for a, b in ((0, 3), (3, 5), (5, 12), (12, 13), (13, 24))]
    np.testing.assert_array_equal(np.concatenate(parts), whole)


@pytest.mark.parametrize(
    ("name", "method"),
    [
        (name, method)
        for name in SAMPLER_NAMES
        for method in (
            Method(samples=12, replicates=3),
            Method(samples=12, replicates=3, scale="adaptive", kernel="rect"),
            Method(samples=12, replicates=3, scale="truncated", kernel="poisson"),
            Method(samples=6, replicates=3, base="integrated_gradients", ig_steps=3, ig_smoothing="inner"),
            Method(samples=6, replicates=3, base="integrated_gradients", ig_steps=3, ig_smoothing="outer"),
            Method(samples=6, replicates=3, base="gradient_x_input", transform="vargrad"),
        )
    ],
)
def test_results_do_not_depend_on_the_chunk_size(name: str, method: Method) -> None:
    import dataclasses

    method = dataclasses.replace(method, sampler=name)  # type: ignore[arg-type]
    model = ReluShiftModel(0.1, (D,))
    results = [
        explain(model, X, method, ClassTarget(0), lower=-1.0, upper=1.0, seed=4, chunk_size=chunk)
        for chunk in (1, 5, 7, 1000)
    ]
    for other in results[1:]:
        np.testing.assert_array_equal(other.attribution, results[0].attribution)
        np.testing.assert_array_equal(other.standard_error, results[0].standard_error)
    assert results[0].samples == method.samples


@pytest.mark.parametrize("name", SAMPLER_NAMES)
def test_fusion_mode_and_adaptive_stopping_work_with_every_sampler(name: str) -> None:
    model = TinyMLP(np.random.default_rng(1), inputs=D)
    fusion = Method(mode="fusion", samples=6, replicates=3, weight_draws=3, sampler=name)  # type: ignore[arg-type]
    result = explain(model, X, fusion, ClassTarget(0), lower=-1.0, upper=1.0, seed=2)
    assert result.samples == 18 and np.all(np.isfinite(result.standard_error))
    stopping = Method(samples=12, replicates=3, tol=10.0, max_samples=24, sampler=name)  # type: ignore[arg-type]
    early = explain(ReluShiftModel(0.1, (D,)), X, stopping, ClassTarget(0), lower=-1.0, upper=1.0, seed=2)
    unit = get_sampler(name).unit_draws(12, 3)
    assert early.samples == 2 * unit and early.extras["stopped_early"]


def _errors(name: str, kernel: str) -> tuple[float, float]:
    """Root-mean-square error against a 40 000-draw reference and root-mean-square reported standard
    error, over 120 seeds at N = 40."""
    model = ReluShiftModel(0.0, (D,))
    truth = explain(
        model, X, Method(samples=40_000, kernel=kernel), ClassTarget(0), lower=-1.0, upper=1.0, seed=999
    ).attribution
    method = Method(samples=40, replicates=5, kernel=kernel, sampler=name)  # type: ignore[arg-type]
    errors, ses = [], []
    for seed in range(120):
        result = explain(model, X, method, ClassTarget(0), lower=-1.0, upper=1.0, seed=seed)
        errors.append(result.attribution - truth)
        ses.append(result.standard_error)
    return float(np.sqrt(np.mean(np.square(errors)))), float(np.sqrt(np.mean(np.square(ses))))


@pytest.mark.parametrize("kernel", ["gaussian", "poisson", "rect"])
def test_the_standard_error_is_calibrated_and_structured_samplers_reduce_it(kernel: str) -> None:
    # The SE is honest for each sampler's units (RMS error ≈ RMS reported SE), and every sampler
    # beats i.i.d. draws on this model (a step per feature: stratification and pairing both help).
    _, iid_se = _errors("iid", kernel)
    for name in SAMPLER_NAMES:
        rmse, rms_se = _errors(name, kernel)
        assert abs(rmse / rms_se - 1.0) < 0.12, (name, rmse, rms_se)
        if name != "iid":
            assert rms_se < 0.85 * iid_se, (name, rms_se, iid_se)


@pytest.mark.parametrize(
    ("name", "kernel", "policy"),
    list(itertools.product(SAMPLER_NAMES, KERNEL_NAMES, ("fixed", "adaptive", "truncated"))),
)
def test_every_kernel_and_policy_runs_with_every_sampler(name: str, kernel: str, policy: str) -> None:
    method = Method(samples=8, replicates=2, kernel=kernel, scale=policy, sampler=name)  # type: ignore[arg-type]
    result = explain(ReluShiftModel(0.1, (D,)), X, method, ClassTarget(0), lower=-1.0, upper=1.0, seed=0)
    assert np.all(np.isfinite(result.attribution)) and np.all(np.isfinite(result.standard_error))
    assert result.samples == 8 and 0.0 <= result.inherent_noise <= 1.0


def test_bad_layouts_are_refused_naming_the_field() -> None:
    with pytest.raises(InvalidArgumentError, match=r"method.samples: .*antithetic.*even.*got 7"):
        planned_evaluations(Method(samples=7, sampler="antithetic"))
    with pytest.raises(InvalidArgumentError, match=r"method.samples: .*multiple of 4; got 10"):
        planned_evaluations(Method(samples=10, replicates=4, sampler="latin_hypercube"))
    with pytest.raises(InvalidArgumentError, match=r"method.replicates: .*at least 2"):
        planned_evaluations(Method(samples=10, replicates=1, sampler="sobol"))
    with pytest.raises(InvalidArgumentError, match=r"method.sampler: .*mode 'parameter' draws none"):
        planned_evaluations(Method(mode="parameter", sampler="antithetic"))
    with pytest.raises(InvalidArgumentError, match=r"method.sampler: expected one of iid, antithetic"):
        planned_evaluations(Method(sampler="halton"))  # type: ignore[arg-type]
    with pytest.raises(InvalidArgumentError, match=r"method.max_samples: .*units of 5"):
        planned_evaluations(Method(samples=10, replicates=2, tol=0.1, max_samples=12, sampler="sobol"))
    wide = (MAX_SOBOL_DIMENSIONS + 1,)
    with pytest.raises(InvalidArgumentError, match=r"method.sampler: Sobol' points exist for at most 21201"):
        explain(
            ReluShiftModel(0.0, wide),
            np.zeros(wide, np.float32),
            Method(samples=4, replicates=2, sampler="sobol"),
            ClassTarget(0),
            lower=-1.0,
            upper=1.0,
            seed=0,
        )
