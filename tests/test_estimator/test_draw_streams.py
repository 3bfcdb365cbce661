"""Block-keyed input-noise streams and grouped moments: order- and batching-invariant (docs/method.md §12)."""

from __future__ import annotations

import numpy as np
import pytest

from estimator.kernels import get_kernel
from estimator.moments import StatisticLayout, UnitMoments
from estimator.noise import BLOCK_DRAWS, DrawStreams, InputNoise

D = 5


def _noise(kernel: str = "gaussian", policy: str = "fixed") -> InputNoise:
    lo, hi = -np.ones(D), np.ones(D)
    return InputNoise(get_kernel(kernel), policy, lo, hi, 0.2 * (hi - lo), 1.0)


@pytest.mark.parametrize("kernel", ["gaussian", "rect"])
def test_a_draw_depends_only_on_its_coordinates(kernel: str) -> None:
    noise = _noise(kernel)
    total = 2 * BLOCK_DRAWS + 9
    whole = DrawStreams(noise, seed=11).rows(3, 1, 0, total)
    assert whole.shape == (total, D)
    # Any split into increasing requests, single rows out of order, and a fresh object agree bit for bit.
    pieces = DrawStreams(noise, seed=11)
    split = np.concatenate([pieces.rows(3, 1, a, b) for a, b in ((0, 7), (7, 64), (64, 65), (65, total))])
    np.testing.assert_array_equal(split, whole)
    shuffled = DrawStreams(noise, seed=11)
    for c in (130, 5, 64, 63, 0, 129):
        np.testing.assert_array_equal(shuffled.rows(3, 1, c, c + 1)[0], whole[c])
    assert not np.array_equal(DrawStreams(noise, seed=12).rows(3, 1, 0, 1), whole[:1])
    assert not np.array_equal(DrawStreams(noise, seed=11).rows(3, 2, 0, 1), whole[:1])


def test_repeated_last_row_is_served_again() -> None:
    noise = _noise()
    reference = DrawStreams(noise, seed=4).rows(0, 0, 0, 80)
    streams = DrawStreams(noise, seed=4, repeats=True)
    first = streams.rows(0, 0, 60, 64)
    again = streams.rows(0, 0, 63, 66)  # 63 again, then across the block boundary
    np.testing.assert_array_equal(first, reference[60:64])
    np.testing.assert_array_equal(again, reference[63:66])
    np.testing.assert_array_equal(streams.rows(0, 0, 65, 66), reference[65:66])


def test_gaussian_draws_are_standard_normal_and_uniforms_are_open() -> None:
    z = DrawStreams(_noise(), seed=1).rows(0, 0, 0, 4000).ravel()
    assert abs(z.mean()) < 4 / np.sqrt(z.size) and abs(z.std() - 1.0) < 0.02
    # Two-sided tail mass beyond 2σ: 4.55 %.
    assert abs(np.mean(np.abs(z) > 2.0) - 0.0455) < 0.005
    u = DrawStreams(_noise(policy="truncated"), seed=1).rows(0, 0, 0, 400).ravel()
    assert u.min() > 0.0 and u.max() < 1.0 and abs(u.mean() - 0.5) < 0.02


@pytest.mark.parametrize("group", [1, 3, 64])
def test_grouped_moments_match_numpy_and_do_not_depend_on_batching(group: int) -> None:
    rng = np.random.default_rng(0)
    zs = 5.0 + rng.normal(size=(70, 2, 3)) * np.array([[1.0], [0.1]])
    pairs = ((0, 0), (0, 1), (1, 1))
    one = UnitMoments(2, 3, pairs, group)
    for z in zs:
        one.add(z)
    many = UnitMoments(2, 3, pairs, group)
    for lo, hi in ((0, 1), (1, 8), (8, 50), (50, 70)):
        many.add_many(zs[lo:hi])
    assert one.count == many.count == 70
    np.testing.assert_array_equal(one.mean, many.mean)
    np.testing.assert_array_equal(one.covariance(), many.covariance())
    np.testing.assert_allclose(one.mean, zs.mean(axis=0), rtol=1e-13)
    for index, (p, q) in enumerate(pairs):
        expected = [np.cov(zs[:, p, j], zs[:, q, j])[0, 1] for j in range(3)]
        np.testing.assert_allclose(one.covariance()[index], expected, rtol=1e-10)


def test_moments_before_two_units() -> None:
    moments = UnitMoments(1, 2, ((0, 0),), group=8)
    assert moments.count == 0 and np.all(moments.mean == 0) and np.all(np.isnan(moments.covariance()))
    moments.add(np.array([[1.0, 2.0]]))
    np.testing.assert_array_equal(moments.mean, [[1.0, 2.0]])
    assert np.all(np.isnan(moments.covariance()))


def test_batched_statistics_match_the_per_sample_statistic() -> None:
    rng = np.random.default_rng(3)
    values = rng.normal(size=(6, 3, 2, 2)).astype(np.float32)
    for transform in ("none", "abs", "smoothgrad_sq", "vargrad"):
        for reduction, axis in (("none", None), ("sum", 0), ("mean", 0), ("max_abs", 0)):
            layout = StatisticLayout((3, 2, 2), transform, reduction, axis)
            batch = layout.statistics(values)
            for i in range(values.shape[0]):
                np.testing.assert_allclose(batch[i], layout.statistic(values[i]), rtol=1e-15, atol=0)


@pytest.mark.parametrize("features", [1, 7, 64])
def test_box_muller_rows_are_standard_normal_and_do_not_depend_on_how_rows_are_drawn(features: int) -> None:
    from scipy import stats

    from estimator.noise import block_generator, standard_normal_rows

    rows = 60_000 // features + 1
    whole = standard_normal_rows(block_generator(3, 0), rows, features)
    assert whole.dtype == np.float32 and whole.shape == (rows, features)
    generator = block_generator(3, 0)
    pieces = [standard_normal_rows(generator, n, features) for n in (1, 5, rows - 6)]
    np.testing.assert_array_equal(np.concatenate(pieces), whole)
    z = whole.astype(np.float64).ravel()
    assert stats.kstest(z, "norm").pvalue > 1e-3
    # Cosine and sine halves are independent normals too.
    for column in (0, features - 1):
        assert stats.kstest(whole[:, column].astype(np.float64), "norm").pvalue > 1e-4
    assert np.all(np.isfinite(z)) and np.abs(z).max() < 7.6
