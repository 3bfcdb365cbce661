"""Data-parallel numpy work: every slice once, same numbers as serial, errors surface (docs/method.md §11)."""

from __future__ import annotations

import threading

import numpy as np
import pytest

import estimator.moments as moments_module
from estimator import ClassTarget, Method, explain
from estimator.kernels import get_kernel
from estimator.moments import UnitMoments
from estimator.noise import (
    INPUT_STREAM,
    DrawStreams,
    InputNoise,
    block_generator,
    block_rows,
    standard_normal_rows,
)
from estimator.parallel import MIN_VALUES_PER_TASK, for_each_slice, slices, worker_count
from estimator.testing import ReluShiftModel

LARGE = 3 * MIN_VALUES_PER_TASK  # features of an instance big enough to split across threads


def _serial(task, count, values_per_item, min_values=MIN_VALUES_PER_TASK):  # type: ignore[no-untyped-def]
    if count:
        task(0, count)


def test_slices_cover_every_item_once_and_respect_the_minimum_work() -> None:
    for count, per_item in ((1, 10), (7, 10**6), (1000, 1), (50, MIN_VALUES_PER_TASK)):
        ranges = slices(count, per_item)
        assert ranges[0][0] == 0 and ranges[-1][1] == count
        assert all(a < b for a, b in ranges) and all(
            b == c for (_, b), (c, _) in zip(ranges[:-1], ranges[1:], strict=True)
        )
        assert len(ranges) <= worker_count()
        if len(ranges) > 1:
            assert min(b - a for a, b in ranges) * per_item >= MIN_VALUES_PER_TASK
    assert slices(0, 5) == [] and len(slices(1000, 1)) == 1


def test_small_work_runs_inline_and_large_work_uses_other_threads() -> None:
    seen: list[int] = []
    for_each_slice(lambda a, b: seen.append(threading.get_ident()), 10, 10)
    assert seen == [threading.get_ident()]
    if worker_count() < 2:
        pytest.skip("one CPU: nothing runs in parallel")
    idents: set[int] = set()
    covered = np.zeros(1000, dtype=int)

    def task(a: int, b: int) -> None:
        idents.add(threading.get_ident())
        covered[a:b] += 1

    for_each_slice(task, 1000, MIN_VALUES_PER_TASK)
    assert np.all(covered == 1) and len(idents) > 1


def test_a_failing_slice_raises_after_every_slice_finished() -> None:
    if worker_count() < 2:
        pytest.skip("one CPU: nothing runs in parallel")
    finished: list[int] = []

    def task(a: int, b: int) -> None:
        if a > 0:
            raise ValueError(f"slice {a}")
        finished.append(a)

    with pytest.raises(ValueError, match="slice"):
        for_each_slice(task, 100, MIN_VALUES_PER_TASK)
    assert finished == [0]


def test_large_instances_draw_each_row_from_its_own_generator_in_parallel() -> None:
    assert block_rows(LARGE) == 1 and block_rows(64) == 64
    lo, hi = -np.ones(LARGE), np.ones(LARGE)
    noise = InputNoise(get_kernel("gaussian"), "fixed", lo, hi, 0.4 * np.ones(LARGE), 1.0)
    whole = DrawStreams(noise, seed=5).rows(2, 0, 0, 6)
    for c in range(6):
        expected = standard_normal_rows(block_generator(5, INPUT_STREAM, 2, 0, c), 1, LARGE)[0]
        np.testing.assert_array_equal(whole[c], expected)
    pieces = DrawStreams(noise, seed=5)
    np.testing.assert_array_equal(np.concatenate([pieces.rows(2, 0, 0, 1), pieces.rows(2, 0, 1, 6)]), whole)


def test_parallel_moments_equal_the_serial_fold_bit_for_bit(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(1)
    zs = 3.0 + rng.normal(size=(9, 1, LARGE)).astype(np.float32)
    parallel = UnitMoments(1, LARGE, ((0, 0),), group=1)
    parallel.add_many(zs[:4])
    parallel.add_many(zs[4:])
    monkeypatch.setattr(moments_module, "for_each_slice", _serial)
    serial = UnitMoments(1, LARGE, ((0, 0),), group=1)
    for z in zs:
        serial.add(z)
    np.testing.assert_array_equal(parallel.mean, serial.mean)
    np.testing.assert_array_equal(parallel.covariance(), serial.covariance())
    np.testing.assert_allclose(
        parallel.covariance()[0], zs.astype(np.float64).var(axis=0, ddof=1)[0], rtol=1e-9
    )


def test_a_large_instance_gives_the_same_explanation_for_any_chunk_size() -> None:
    # Several chunks: the next chunk's noise is drawn in a second thread while the model runs.
    x = np.linspace(-0.5, 0.5, LARGE).astype(np.float32)
    results = [
        explain(
            ReluShiftModel(0.1, (LARGE,)),
            x,
            Method(samples=12),
            ClassTarget(0),
            lower=-1.0,
            upper=1.0,
            seed=9,
            chunk_size=chunk,
        )
        for chunk in (1, 5, 12)
    ]
    for other in results[1:]:
        np.testing.assert_array_equal(other.attribution, results[0].attribution)
        np.testing.assert_array_equal(other.standard_error, results[0].standard_error)
