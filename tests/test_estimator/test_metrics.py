"""Evaluation metrics (docs/method.md §13) on maps with known values."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from estimator import (
    InvalidArgumentError,
    complexity,
    consistency,
    convergence,
    deletion_auc,
    insertion_auc,
    sparseness,
    spearman,
)


def test_sparseness_is_the_gini_index() -> None:
    assert sparseness(np.ones(10)) == pytest.approx(0.0)
    one_hot = np.zeros(10)
    one_hot[3] = -5.0
    assert sparseness(one_hot) == pytest.approx(0.9)  # (n − 1)/n for a single non-zero
    v = np.array([1.0, 2.0, 3.0, 4.0])
    mean_difference = np.abs(v[:, None] - v[None, :]).mean()
    assert sparseness(-v) == pytest.approx(mean_difference / (2 * v.mean()))
    assert sparseness(np.zeros(4)) == 0.0
    assert sparseness(np.ones((2, 3))) == pytest.approx(0.0)


def test_complexity_is_the_entropy_of_normalised_magnitudes() -> None:
    assert complexity(np.ones(8)) == pytest.approx(np.log(8))
    assert complexity(np.array([0.0, -3.0, 0.0])) == pytest.approx(0.0)
    p = np.array([0.5, 0.25, 0.25])
    assert complexity(-4 * p) == pytest.approx(stats.entropy(p))


def test_spearman_and_consistency() -> None:
    a = np.arange(10.0)
    assert spearman(a, a**3) == pytest.approx(1.0)
    assert spearman(a, -a) == pytest.approx(-1.0)
    assert consistency(a, -a) == pytest.approx(1.0)
    assert spearman(a, np.ones(10)) == 0.0
    batch_a = np.stack([a, a])
    batch_b = np.stack([-a, np.random.default_rng(0).permutation(a)])
    expected = 0.5 * (1.0 + abs(stats.spearmanr(a, batch_b[1]).statistic))
    assert consistency(batch_a, batch_b, batched=True) == pytest.approx(expected)
    with pytest.raises(InvalidArgumentError, match="b: expected shape"):
        consistency(a, a[:5])


def test_deletion_and_insertion_curves_on_a_linear_score() -> None:
    weights = np.array([4.0, 3.0, 2.0, 1.0])
    x = np.ones(4)
    calls = []

    def score(batch: np.ndarray) -> np.ndarray:
        calls.append(batch.shape)
        return batch.reshape(batch.shape[0], -1) @ weights

    good = deletion_auc(score, x, weights, 0.0, steps=4)
    bad = deletion_auc(score, x, -weights, 0.0, steps=4)
    assert calls == [(5, 4), (5, 4)]  # one batched call per curve
    # Deleting 4, 3, 2, 1 in turn: scores 10, 6, 3, 1, 0.
    assert good == pytest.approx(np.trapezoid([10, 6, 3, 1, 0], dx=0.25))
    assert bad > good
    assert insertion_auc(score, x, weights, 0.0, steps=4) == pytest.approx(
        np.trapezoid([0, 4, 7, 9, 10], dx=0.25)
    )


def test_curves_accept_a_channel_reduced_attribution() -> None:
    x = np.ones((3, 2))
    attribution = np.array([[1.0, 0.0]])  # one feature per column, broadcast over 3 channels
    seen = []

    def score(batch: np.ndarray) -> np.ndarray:
        seen.append(batch.copy())
        return batch.sum(axis=(1, 2))

    deletion_auc(score, x, attribution, 0.0, steps=2)
    np.testing.assert_array_equal(seen[0][1], [[0.0, 1.0]] * 3)
    with pytest.raises(InvalidArgumentError, match="attribution"):
        deletion_auc(score, x, np.ones(3), 0.0)


def test_convergence_is_relative_error_by_n() -> None:
    reference = np.array([3.0, 4.0])
    errors = convergence({10: reference + [0.0, 0.5], 1: reference * 0.0}, reference)
    assert list(errors) == [1, 10]
    assert errors[1] == pytest.approx(1.0) and errors[10] == pytest.approx(0.1)
    with pytest.raises(InvalidArgumentError, match="reference"):
        convergence({1: reference}, np.zeros(2))
