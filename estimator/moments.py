"""Streaming moments and the delta-method standard errors of transformed, channel-reduced attributions.

Each Monte Carlo *unit* (one input draw; one weight draw for NoiseGrad; one weight draw with its
inner input draws averaged for FusionGrad) contributes a statistic ``z`` of shape ``(K, P)``:
``P`` locations (features, or features without the channel axis) and ``K`` per-location values
(``a``; ``a²``; or ``(a, a²)`` per channel). Units are i.i.d., so the estimate ``θ = f(mean z)`` has
the delta-method variance ``∇fᵀ Σ_z ∇f / n`` per location (Casella & Berger, *Statistical
Inference*, §5.5.4); for linear ``f`` this is exactly the variance of the mean of per-unit reduced
values. Only the entries of ``Σ_z`` that ``∇f`` touches are accumulated (``pairs``).

Moments are shifted sums accumulated in fixed groups of consecutive units, always in unit order, so
the result does not depend on how units were batched. Imports numpy only.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .parallel import for_each_slice

__all__ = ["MAX_COVARIANCE_PAIRS", "MAX_STATISTIC_CHANNELS", "StatisticLayout", "UnitMoments"]

# Above this many cross-channel covariance arrays per location the layout drops the cross-channel
# terms (documented approximation) instead of holding K² arrays of the input's size.
MAX_COVARIANCE_PAIRS = 64
# Per-channel statistics are folded channel by channel (one numpy operation each); a reduced axis
# longer than this (with a non-linear transform or reduction) is refused before any work.
MAX_STATISTIC_CHANNELS = 8192
# Units summed in one vectorised step: at most this many, holding at most this many float64 values.
GROUP_UNITS = 64
GROUP_VALUES = 2**15


class UnitMoments:
    """Running mean and selected co-moments of ``(K, P)`` unit statistics (float64).

    Accumulates sums of the statistics shifted by the first unit, ``S₁ = Σ (z − z₀)`` and
    ``S₂[p, q] = Σ (z − z₀)_p (z − z₀)_q`` (the shifted-data algorithm, Chan, Golub & LeVeque 1983:
    stable because ``z₀`` is one draw of the same distribution, so ``S₁²/n`` never dwarfs ``S₂``).
    Units are summed in fixed groups of ``group`` consecutive units, each group reduced in one
    vectorised step once complete, so the result depends on the units and their order but never on
    how :meth:`add_many` calls split them.
    """

    def __init__(self, k: int, locations: int, pairs: tuple[tuple[int, int], ...], group: int = 1) -> None:
        self.pairs = pairs
        self.group = max(1, int(group))
        self._merged = 0
        self._shift: np.ndarray | None = None
        self._sum = np.zeros((k, locations), dtype=np.float64)
        self._cross = np.zeros((len(pairs), locations), dtype=np.float64)
        self._pending = np.empty((self.group, k, locations), dtype=np.float64) if self.group > 1 else None
        self._filled = 0
        # Pairs (p, p) only (the common case) square in one vectorised step.
        self._diagonal = all(p == q for p, q in pairs)
        self._diagonal_rows = np.array([p for p, _ in pairs], dtype=np.intp)
        self._every_row = self._diagonal and [p for p, _ in pairs] == list(range(k))

    @property
    def count(self) -> int:
        """Units added so far."""
        return self._merged + self._filled

    def add(self, z: np.ndarray) -> None:
        """Add one unit's statistic, shape ``(K, P)``."""
        self.add_many(np.asarray(z)[None])

    def add_many(self, zs: np.ndarray) -> None:
        """Add units in order, shape ``(n, K, P)`` (any float dtype; accumulated in float64)."""
        n = zs.shape[0]
        if self._pending is None:
            if n:
                self._accumulate(zs, one_by_one=True)
            return
        done = 0
        while done < n:
            take = min(self.group - self._filled, n - done)
            self._pending[self._filled : self._filled + take] = zs[done : done + take]
            self._filled += take
            done += take
            if self._filled == self.group:
                self._accumulate(self._pending)
                self._filled = 0

    def _accumulate(self, block: np.ndarray, one_by_one: bool = False) -> None:
        """Fold ``block`` (``(n, K, P)``) in: as one group, or unit after unit when ``one_by_one``.

        Locations are independent, so slices of them run in parallel (:mod:`estimator.parallel`)
        with exactly the arithmetic of the whole.
        """
        if self._shift is None:
            self._shift = np.array(block[0], dtype=np.float64)
        shift = self._shift

        def fold(start: int, stop: int) -> None:
            for part in [block[i : i + 1] for i in range(block.shape[0])] if one_by_one else [block]:
                d = np.subtract(part[:, :, start:stop], shift[:, start:stop], dtype=np.float64)
                self._sum[:, start:stop] += d[0] if d.shape[0] == 1 else d.sum(axis=0)
                self._cross[:, start:stop] += self._products(d)

        for_each_slice(fold, block.shape[2], block.shape[0] * block.shape[1])
        self._merged += block.shape[0]

    def _products(self, d: np.ndarray) -> np.ndarray:
        if self._diagonal:
            chosen = d if self._every_row else d[:, self._diagonal_rows]
            np.multiply(chosen, chosen, out=chosen)
            squares: np.ndarray = chosen[0] if chosen.shape[0] == 1 else chosen.sum(axis=0)
            return squares
        products = np.stack([d[:, p] * d[:, q] for p, q in self.pairs], axis=1)
        summed: np.ndarray = products[0] if products.shape[0] == 1 else products.sum(axis=0)
        return summed

    def _totals(self) -> tuple[int, np.ndarray, np.ndarray]:
        """``(n, S₁, S₂)`` including the units of the open group (nothing is mutated)."""
        if self._filled == 0 or self._pending is None:
            return self._merged, self._sum, self._cross
        block = self._pending[: self._filled]
        shift = self._shift if self._shift is not None else block[0]
        d = np.subtract(block, shift, dtype=np.float64)
        total = self._sum + d.sum(axis=0)
        if self._diagonal:
            chosen = d[:, self._diagonal_rows]
            cross = self._cross + (chosen * chosen).sum(axis=0)
        else:
            cross = self._cross + np.stack([d[:, p] * d[:, q] for p, q in self.pairs], axis=1).sum(axis=0)
        return self.count, total, cross

    @property
    def mean(self) -> np.ndarray:
        """Mean statistic, ``(K, P)`` float64 (zeros before the first unit)."""
        return self.mean_and_covariance()[0]

    def covariance(self) -> np.ndarray:
        """Sample co-variances of the ``pairs``, shape ``(len(pairs), P)``; NaN with fewer than 2 units."""
        return self.mean_and_covariance()[1]

    def mean_and_covariance(self) -> tuple[np.ndarray, np.ndarray]:
        """:attr:`mean` and :meth:`covariance` from one pass over the open group."""
        n, total, cross = self._totals()
        if n == 0:
            return np.zeros_like(self._sum), np.full_like(self._cross, np.nan)
        shift = self._shift if self._shift is not None else self._pending[0]  # type: ignore[index]
        mean = shift + total / n
        if n < 2:
            return mean, np.full_like(self._cross, np.nan)
        p_rows = [p for p, _ in self.pairs]
        q_rows = [q for _, q in self.pairs]
        return mean, (cross - total[p_rows] * total[q_rows] / n) / (n - 1)


@dataclass(frozen=True)
class StatisticLayout:
    """How a per-sample attribution becomes the unit statistic, and how moments become ``(θ, SE)``.

    Attributes:
        input_shape: shape of one attribution before reduction.
        transform: ``none``, ``abs``, ``smoothgrad_sq`` or ``vargrad`` (docs/method.md §8).
        reduction: ``none``, ``sum``, ``mean`` or ``max_abs`` over ``channel_axis``.
        channel_axis: non-negative axis of ``input_shape`` or ``None``.
    """

    input_shape: tuple[int, ...]
    transform: str
    reduction: str
    channel_axis: int | None

    @property
    def channels(self) -> int:
        return 1 if self.channel_axis is None else self.input_shape[self.channel_axis]

    @property
    def locations(self) -> int:
        return math.prod(self.input_shape) // self.channels

    @property
    def output_shape(self) -> tuple[int, ...]:
        if self.channel_axis is None:
            return self.input_shape
        return self.input_shape[: self.channel_axis] + self.input_shape[self.channel_axis + 1 :]

    @property
    def _linear_reduction(self) -> bool:
        # Sum and mean commute with the mean over units for the linear transforms: reduce per sample.
        return self.reduction in ("sum", "mean") and self.transform in ("none", "smoothgrad_sq")

    @property
    def _weight(self) -> float:
        return 1.0 / self.channels if self.reduction == "mean" else 1.0

    @property
    def k(self) -> int:
        if self._linear_reduction:
            return 1
        return 2 * self.channels if self.transform == "vargrad" else self.channels

    @property
    def _all_pairs(self) -> bool:
        # A non-linear statistic reduced by a sum or mean needs every cross-channel co-moment.
        return self.reduction in ("sum", "mean") and not self._linear_reduction

    @property
    def full_pair_count(self) -> int:
        """How many co-moments the delta method needs (counted, not listed: K² / 2 can be huge)."""
        if self._all_pairs:
            return self.k * (self.k + 1) // 2
        return 3 * self.channels if self.transform == "vargrad" else self.k

    @property
    def pairs(self) -> tuple[tuple[int, int], ...]:
        """The co-moments accumulated: every one the delta method needs, or only the within-channel
        ones when those would be more than :data:`MAX_COVARIANCE_PAIRS`."""
        if self._all_pairs and self.full_pair_count <= MAX_COVARIANCE_PAIRS:
            return tuple((p, q) for p in range(self.k) for q in range(p, self.k))
        c = self.channels
        if self.transform == "vargrad":
            return tuple(pair for ch in range(c) for pair in ((ch, ch), (ch, c + ch), (c + ch, c + ch)))
        return tuple((p, p) for p in range(self.k))

    @property
    def approximate(self) -> bool:
        """True when cross-channel covariances are dropped from the standard error."""
        return len(self.pairs) < self.full_pair_count

    def new_moments(self, grouped: bool = True) -> UnitMoments:
        """Fresh moments; ``grouped=False`` folds in every unit at once (for per-unit stopping rules)."""
        group = 1
        if grouped:
            group = max(1, min(GROUP_UNITS, GROUP_VALUES // max(1, self.k * self.locations)))
        return UnitMoments(self.k, self.locations, self.pairs, group)

    def statistics(self, attributions: np.ndarray) -> np.ndarray:
        """The ``(n, K, P)`` statistics of ``n`` samples' attributions (``(n, ...)``, each of ``input_shape``'s size).

        float64, except that the untransformed, unreduced statistic of a float32 batch stays a float32
        view (the moments accumulate it in float64 exactly).
        """
        n = attributions.shape[0]
        values = attributions.reshape((n, *self.input_shape))
        if self.transform == "none" and self.channel_axis is None:
            return values.reshape(n, 1, -1)
        values = values.astype(np.float64, copy=False)
        if self.channel_axis is None:
            per_channel = values.reshape(n, 1, -1)
        else:
            per_channel = np.moveaxis(values, self.channel_axis + 1, 1).reshape(n, self.channels, -1)
        if self.transform == "smoothgrad_sq":
            per_channel = per_channel * per_channel
        elif self.transform == "vargrad":
            per_channel = np.concatenate([per_channel, per_channel * per_channel], axis=1)
        if self._linear_reduction:
            reduced: np.ndarray = self._weight * per_channel.sum(axis=1, keepdims=True)
            return reduced
        return per_channel

    def statistic(self, attribution: np.ndarray) -> np.ndarray:
        """The ``(K, P)`` float64 statistic of one sample's attribution (any shape with ``input_shape``'s size)."""
        values = np.asarray(attribution, dtype=np.float64).reshape(self.input_shape)
        if self.channel_axis is None:
            per_channel = values.reshape(1, -1)
        else:
            per_channel = np.moveaxis(values, self.channel_axis, 0).reshape(self.channels, -1)
        if self.transform == "smoothgrad_sq":
            per_channel = per_channel * per_channel
        elif self.transform == "vargrad":
            per_channel = np.concatenate([per_channel, per_channel * per_channel], axis=0)
        if self._linear_reduction:
            reduced: np.ndarray = self._weight * per_channel.sum(axis=0, keepdims=True)
            return reduced
        return per_channel

    def finalize(self, moments: UnitMoments) -> tuple[np.ndarray, np.ndarray]:
        """The attribution ``θ`` and its standard error, both float64 of :attr:`output_shape`.

        The standard error is NaN when fewer than two units were drawn.
        """
        mean, covariance = moments.mean_and_covariance()
        if self.k == 1 and self.transform == "none":
            # θ is the mean itself: SE = sqrt(var / n) without the delta-method bookkeeping.
            if moments.count < 2:
                return mean[0].reshape(self.output_shape), np.full(self.output_shape, np.nan)
            se = np.sqrt(np.maximum(covariance[0], 0.0) / moments.count)
            return mean[0].reshape(self.output_shape), se.reshape(self.output_shape)
        theta, gradient = self._estimate(mean)
        variance = np.zeros(mean.shape[1], dtype=np.float64)
        for index, (p, q) in enumerate(self.pairs):
            term = gradient[p] * gradient[q] * covariance[index]
            variance += term if p == q else 2.0 * term
        n = max(moments.count, 1)
        se = np.sqrt(np.maximum(variance, 0.0) / n) if moments.count >= 2 else np.full_like(variance, np.nan)
        return theta.reshape(self.output_shape), se.reshape(self.output_shape)

    def _estimate(self, mean: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``θ = f(mean)`` per location and ``∇f`` (``(K, P)``)."""
        gradient = np.zeros_like(mean)
        if self._linear_reduction or self.channels == 1 and self.transform != "vargrad":
            value = mean[0]
            gradient[0] = np.sign(value) if self.transform == "abs" else 1.0
            return (np.abs(value) if self.transform == "abs" else value.copy()), gradient
        c = self.channels
        if self.transform == "vargrad":
            first, second = mean[:c], mean[c:]
            per_channel = np.maximum(second - first * first, 0.0)
            d_first, d_second = -2.0 * first, np.ones_like(second)
        else:
            per_channel = mean
            d_first = np.ones_like(mean)
            d_second = None
        if self.reduction == "max_abs" or self.reduction == "none":
            # With reduction "none" there is one channel; max over it is the identity.
            pick = np.argmax(np.abs(per_channel), axis=0)
            cols = np.arange(per_channel.shape[1])
            chosen = per_channel[pick, cols]
            sign = np.sign(chosen) if self.transform != "vargrad" else np.ones_like(chosen)
            gradient[pick, cols] = sign * d_first[pick, cols]
            if d_second is not None:
                gradient[c + pick, cols] = d_second[pick, cols]
            return np.abs(chosen), gradient
        w = self._weight
        if self.transform == "abs":
            sign = np.sign(per_channel)
            gradient[:c] = w * sign
            return w * np.abs(per_channel).sum(axis=0), gradient
        # vargrad with sum / mean
        gradient[:c] = w * d_first
        gradient[c:] = w * d_second  # type: ignore[operator]
        return w * per_channel.sum(axis=0), gradient
