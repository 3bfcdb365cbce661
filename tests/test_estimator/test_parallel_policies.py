"""Every scale policy, kernel, base method and mode on instances large enough for the parallel path.

A chunk of 50 rows of 6 000 features (300 000 values) is split across threads when more than one
worker is allowed; per-feature scales (AdaptGrad) once crashed there because a single shared row of
scales was sliced as if it held one row per sample. Results must equal the single-threaded ones bit
for bit, and not depend on the chunk size either.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest

import estimator.parallel as parallel
from estimator import ClassTarget, InvalidArgumentError, Method, explain
from estimator.kernels import KERNEL_NAMES
from estimator.parallel import MIN_VALUES_PER_TASK, slices, thread_budget
from estimator.testing import ReluShiftModel, TinyMLP

FEATURES = 6000
SAMPLES = 50
POLICIES = ("fixed", "adaptive", "truncated")
BASES = (
    ("gradient", {}),
    ("gradient_x_input", {}),
    ("integrated_gradients", {"ig_steps": 3, "ig_smoothing": "inner"}),
    ("integrated_gradients", {"ig_steps": 3, "ig_smoothing": "outer"}),
)


def _instance() -> np.ndarray:
    rng = np.random.default_rng(3)
    x = rng.uniform(0.0, 1.0, FEATURES).astype(np.float32)
    x[::7] = 0.0  # on the lower bound: AdaptGrad's scale is zero there
    x[::11] = 1.0
    return x


def _explain(model, method: Method, workers: int, monkeypatch: pytest.MonkeyPatch, chunk: int | None = None):  # type: ignore[no-untyped-def]
    return explain(
        model,
        _instance(),
        method,
        ClassTarget(0),
        lower=0.0,
        upper=1.0,
        seed=11,
        chunk_size=chunk,
        threads=workers,
    )


def test_the_parallel_path_is_taken_for_this_instance_size() -> None:
    assert SAMPLES * FEATURES >= 2 * MIN_VALUES_PER_TASK
    with thread_budget(4):
        assert len(slices(SAMPLES, FEATURES)) > 1
    with thread_budget(1):
        assert len(slices(SAMPLES, FEATURES)) == 1


def test_the_thread_budget_is_the_callers(monkeypatch: pytest.MonkeyPatch) -> None:
    # Two chunks of 25 rows × 12 000 features: large enough to split, and the second chunk is built in
    # the prefetch thread, which must honour the caller's budget too.
    features = 2 * FEATURES
    x = np.linspace(0.0, 1.0, features).astype(np.float32)
    model = ReluShiftModel(0.4, (features,))
    method = Method(scale="adaptive", samples=SAMPLES)

    def run(threads: int):  # type: ignore[no-untyped-def]
        return explain(
            model, x, method, ClassTarget(0), lower=0.0, upper=1.0, seed=3, chunk_size=25, threads=threads
        )

    def no_pool() -> None:
        raise AssertionError("the pool was used under a budget of one thread")

    monkeypatch.setattr(parallel, "_executor", no_pool)
    single = run(1)
    monkeypatch.undo()
    used: list[int] = []
    original = parallel._executor

    def counting():  # type: ignore[no-untyped-def]
        used.append(1)
        return original()

    monkeypatch.setattr(parallel, "_executor", counting)
    several = run(3)
    assert used, "a budget of three threads used no other thread"
    np.testing.assert_array_equal(single.attribution, several.attribution)
    np.testing.assert_array_equal(single.standard_error, several.standard_error)
    with pytest.raises(InvalidArgumentError, match="threads"):
        explain(model, x, method, ClassTarget(0), lower=0.0, upper=1.0, threads=0)


@pytest.mark.parametrize(("policy", "kernel"), list(itertools.product(POLICIES, KERNEL_NAMES)))
def test_every_policy_and_kernel_gives_the_single_threaded_result_with_several_threads(
    policy: str, kernel: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = ReluShiftModel(0.4, (FEATURES,))
    for base, extra in BASES:
        method = Method(base=base, scale=policy, kernel=kernel, samples=SAMPLES, **extra)  # type: ignore[arg-type]
        single = _explain(model, method, 1, monkeypatch)
        several = _explain(model, method, 4, monkeypatch)
        np.testing.assert_array_equal(several.attribution, single.attribution, err_msg=f"{base} {extra}")
        np.testing.assert_array_equal(
            several.standard_error, single.standard_error, err_msg=f"{base} {extra}"
        )
        assert several.inherent_noise == single.inherent_noise
        assert np.all(np.isfinite(single.attribution))
        if policy == "adaptive" and base == "gradient":
            # Zero scale on a bound: the smoothed gradient there is the plain gradient (0 below t).
            assert np.all(single.attribution[_instance() == 0.0] == 0.0)


@pytest.mark.parametrize("policy", POLICIES)
def test_adaptive_and_other_policies_do_not_depend_on_the_chunk_size(
    policy: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = ReluShiftModel(0.4, (FEATURES,))
    method = Method(scale=policy, samples=SAMPLES)  # type: ignore[arg-type]
    reference = _explain(model, method, 4, monkeypatch)
    for chunk in (1, 7, 50):
        other = _explain(model, method, 4, monkeypatch, chunk)
        np.testing.assert_array_equal(other.attribution, reference.attribution)
        np.testing.assert_array_equal(other.standard_error, reference.standard_error)


@pytest.mark.parametrize("policy", POLICIES)
def test_fusion_mode_with_per_feature_scales_on_a_large_instance(
    policy: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = TinyMLP(np.random.default_rng(0), hidden=2, outputs=2, input_shape=(FEATURES,))
    method = Method(mode="fusion", scale=policy, samples=SAMPLES, weight_draws=2)  # type: ignore[arg-type]
    single = _explain(model, method, 1, monkeypatch)
    several = _explain(model, method, 4, monkeypatch)
    np.testing.assert_array_equal(several.attribution, single.attribution)
    np.testing.assert_array_equal(several.standard_error, single.standard_error)


@pytest.mark.parametrize("sampler", ["antithetic", "latin_hypercube"])
@pytest.mark.parametrize("policy", ["fixed", "adaptive"])
def test_samplers_on_the_parallel_path_equal_one_thread_and_any_chunk(sampler: str, policy: str) -> None:
    # 6 000 features: one draw per generator (block_rows = 10 here), rows filled in parallel, pairs and
    # point sets split across chunks of 7.
    model = ReluShiftModel(0.4, (FEATURES,))
    method = Method(scale=policy, samples=SAMPLES, sampler=sampler, replicates=5)  # type: ignore[arg-type]
    single = explain(model, _instance(), method, ClassTarget(0), lower=0.0, upper=1.0, seed=11, threads=1)
    for threads, chunk in ((4, None), (4, 7), (1, 7)):
        other = explain(
            model,
            _instance(),
            method,
            ClassTarget(0),
            lower=0.0,
            upper=1.0,
            seed=11,
            threads=threads,
            chunk_size=chunk,
        )
        np.testing.assert_array_equal(other.attribution, single.attribution)
        np.testing.assert_array_equal(other.standard_error, single.standard_error)
    iid = explain(
        model,
        _instance(),
        Method(scale=policy, samples=SAMPLES),
        ClassTarget(0),
        lower=0.0,
        upper=1.0,
        seed=11,
    )
    assert float(np.mean(single.standard_error)) < float(np.mean(iid.standard_error))
