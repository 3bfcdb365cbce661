"""Evaluation metrics for attribution maps (docs/method.md §13). Pure functions over numpy arrays.

- :func:`sparseness`: Gini index of ``|s|`` (Chalasani et al. 2020, "Concise explanations of neural
  networks using adversarial training"; Zhou et al. 2024, AdaptGrad, Table 2 "Sparseness").
- :func:`complexity`: Shannon entropy of the normalised ``|s|`` (Bhatt et al. 2020, "Evaluating and
  aggregating feature-based model explanations"). Not the AdaptGrad paper's "Information Level",
  which follows Kapishnikov et al. 2019.
- :func:`spearman` / :func:`consistency`: rank correlation between maps (Zhou et al. 2024, AdaptGrad, Table 1).
- :func:`deletion_auc` / :func:`insertion_auc`: faithfulness curves (Petsiuk et al. 2018, RISE).
- :func:`convergence`: relative error of Monte Carlo estimates against a reference.

Imports numpy and scipy only.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import numpy as np
from numpy.typing import ArrayLike
from scipy import stats

from ._checks import check_float_array, check_int
from .errors import InvalidArgumentError

__all__ = [
    "complexity",
    "consistency",
    "convergence",
    "deletion_auc",
    "insertion_auc",
    "sparseness",
    "spearman",
]


def _magnitudes(s: ArrayLike, field: str = "s") -> np.ndarray:
    values = check_float_array(s, field).reshape(-1)
    if values.size == 0:
        raise InvalidArgumentError(f"{field}: expected a non-empty map; got size 0")
    magnitudes: np.ndarray = np.abs(values)
    return magnitudes


def sparseness(s: ArrayLike) -> float:
    """Gini index of ``|s|`` over all features, in [0, 1); higher is sparser (Chalasani et al. 2020).

    ``G = Σ_i (2i − n − 1) v_(i) / (n Σ v)`` with ``v_(i)`` the magnitudes sorted ascending (1-based
    ``i``). 0 for a constant map, and for an all-zero map by convention.
    """
    v = np.sort(_magnitudes(s))
    total = v.sum()
    if total == 0.0:
        return 0.0
    n = v.size
    ranks = np.arange(1, n + 1, dtype=np.float64)
    return float(np.sum((2.0 * ranks - n - 1.0) * v) / (n * total))


def complexity(s: ArrayLike) -> float:
    """Entropy (nats) of ``p = |s| / Σ|s|``, in ``[0, ln n]``; lower is more concentrated (Bhatt et al. 2020).

    An all-zero map has entropy 0 by convention.
    """
    v = _magnitudes(s)
    total = v.sum()
    if total == 0.0:
        return 0.0
    p = v[v > 0] / total
    return float(-np.sum(p * np.log(p)))


def spearman(a: ArrayLike, b: ArrayLike) -> float:
    """Spearman rank correlation of two maps of equal size (flattened); 0 when either is constant."""
    x = check_float_array(a, "a").reshape(-1)
    y = check_float_array(b, "b").reshape(-1)
    if x.size != y.size:
        raise InvalidArgumentError(f"b: expected {x.size} values like a; got {y.size}")
    if x.size < 2 or np.all(x == x[0]) or np.all(y == y[0]):
        return 0.0
    return float(stats.spearmanr(x, y).statistic)


def consistency(a: ArrayLike, b: ArrayLike, *, batched: bool = False) -> float:
    """Mean ``|ρ_Spearman|`` between the maps of two models (Zhou et al. 2024, AdaptGrad, Table 1 "Consistency").

    Args:
        a, b: two maps of the same shape, or with ``batched=True`` two stacks ``(B, ...)`` compared
            pairwise along the first axis.
        batched: whether the first axis indexes maps.
    """
    x = check_float_array(a, "a")
    y = check_float_array(b, "b")
    if x.shape != y.shape:
        raise InvalidArgumentError(f"b: expected shape {x.shape} like a; got {y.shape}")
    if not batched:
        return abs(spearman(x, y))
    if x.ndim < 1 or x.shape[0] == 0:
        raise InvalidArgumentError(f"a: expected a non-empty batch axis; got shape {x.shape}")
    return float(np.mean([abs(spearman(x[i], y[i])) for i in range(x.shape[0])]))


def _curve(
    score_fn: Callable[[np.ndarray], np.ndarray],
    x: ArrayLike,
    attribution: ArrayLike,
    baseline: ArrayLike,
    steps: int,
    insert: bool,
) -> float:
    xs = check_float_array(x, "x")
    n_steps = check_int(steps, "steps", minimum=1)
    attr = check_float_array(attribution, "attribution", xs.shape)
    base = np.broadcast_to(check_float_array(baseline, "baseline", xs.shape), xs.shape)
    # Features are the attribution's elements; each covers the input entries it broadcasts over.
    order = np.argsort(-attr.reshape(-1), kind="stable")
    n = order.size
    rank = np.empty(n, dtype=np.int64)
    rank[order] = np.arange(n)
    rank_map = np.broadcast_to(rank.reshape(attr.shape), xs.shape)
    counts = np.round(np.linspace(0, n, n_steps + 1)).astype(np.int64)
    batch = np.empty((n_steps + 1, *xs.shape), dtype=np.float64)
    for t, count in enumerate(counts):
        moved = rank_map < count
        batch[t] = np.where(moved, xs, base) if insert else np.where(moved, base, xs)
    scores = np.asarray(score_fn(batch), dtype=np.float64).reshape(-1)
    if scores.shape != (n_steps + 1,):
        raise InvalidArgumentError(
            f"score_fn: expected one score per input, shape ({n_steps + 1},); got {scores.shape}"
        )
    fractions = counts / n
    return float(np.trapezoid(scores, fractions))


def deletion_auc(
    score_fn: Callable[[np.ndarray], np.ndarray],
    x: ArrayLike,
    attribution: ArrayLike,
    baseline: ArrayLike,
    steps: int = 20,
) -> float:
    """Area under the score as the most salient features are replaced by ``baseline`` (lower is better).

    Features are ranked by attribution value, largest first (pass ``abs(attribution)`` to rank by
    magnitude); ``steps + 1`` inputs (0 to all features deleted) are scored in one batched call.

    Args:
        score_fn: maps a batch ``(B, *x.shape)`` float64 to ``(B,)`` scores (e.g. the class probability).
        x: the instance.
        attribution: a map broadcastable to ``x`` (e.g. channel-reduced); each element is one feature.
        baseline: the replacement values, broadcastable to ``x``.
        steps: number of deletion steps (≥ 1).

    Returns:
        Trapezoidal area over the deleted fraction in [0, 1].
    """
    return _curve(score_fn, x, attribution, baseline, steps, insert=False)


def insertion_auc(
    score_fn: Callable[[np.ndarray], np.ndarray],
    x: ArrayLike,
    attribution: ArrayLike,
    baseline: ArrayLike,
    steps: int = 20,
) -> float:
    """Area under the score as the most salient features are inserted into ``baseline`` (higher is better).

    Same conventions as :func:`deletion_auc`, starting from the baseline.
    """
    return _curve(score_fn, x, attribution, baseline, steps, insert=True)


def convergence(estimates_by_n: Mapping[int, ArrayLike], reference: ArrayLike) -> dict[int, float]:
    """Relative error ``‖Ĝ_N − Ĝ_ref‖₂ / ‖Ĝ_ref‖₂`` of each estimate (docs/method.md §13), keyed by ``N`` ascending."""
    ref = check_float_array(reference, "reference")
    norm = float(np.linalg.norm(ref))
    if norm == 0.0:
        raise InvalidArgumentError("reference: expected a non-zero map; got all zeros")
    result: dict[int, float] = {}
    for n in sorted(estimates_by_n):
        estimate = check_float_array(estimates_by_n[n], f"estimates_by_n[{n}]")
        if estimate.shape != ref.shape:
            raise InvalidArgumentError(
                f"estimates_by_n[{n}]: expected shape {ref.shape} like reference; got {estimate.shape}"
            )
        result[int(n)] = float(np.linalg.norm(estimate - ref) / norm)
    return result
