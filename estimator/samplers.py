"""Samplers of input noise: which draws the Monte Carlo mean averages (docs/method.md §2.1).

A sampler turns the noise streams into rows of draws (``N(0, 1)`` float32 for direct gaussian
noise, open ``Uniform(0, 1)`` float64 otherwise: :class:`~estimator.noise.InputNoise`). Every draw
still maps through the kernel's quantile and the scale policy, so each sampler works with every
kernel and policy. Draws are grouped into *units*, the i.i.d. blocks the standard error is computed
over (a unit's statistic is the mean over its draws):

- ``iid``: independent draws, one per unit (Smilkov et al. 2017).
- ``antithetic``: pairs ``(u, −u)`` — ``1 − U`` in uniform space, ``−z`` for gaussian draws; for a
  symmetric kernel both halves follow the kernel, and the odd part of the gradient cancels within a
  pair (Hammersley & Morton 1956, "A new Monte Carlo technique: antithetic variates").
- ``latin_hypercube``: each unit is a Latin hypercube of ``samples / replicates`` points: per
  feature, one point in each of that many equal-probability strata (McKay, Beckman & Conover 1979).
- ``sobol``: each unit is a scrambled Sobol' point set of ``samples / replicates`` points (Owen 1998,
  "Scrambling Sobol' and Niederreiter–Xing points"), for at most :data:`MAX_SOBOL_DIMENSIONS`
  features.

The replicates of the last two are independent randomisations, so their spread gives an honest
standard error (randomised quasi-Monte Carlo). A draw depends only on the seed, its coordinates and
the method, never on chunking. Imports numpy and scipy only.
"""

from __future__ import annotations

import warnings
from abc import ABC, abstractmethod
from typing import Any, ClassVar

import numpy as np
from scipy import special
from scipy.stats import qmc

from .errors import InvalidArgumentError
from .kernels import TINY_UNIFORM
from .noise import DrawStreams, InputNoise, block_generator

__all__ = [
    "MAX_SOBOL_DIMENSIONS",
    "SAMPLER_NAMES",
    "SAMPLER_STREAM",
    "Sampler",
    "SampledDraws",
    "get_sampler",
]

# Stream id of the randomisations of structured samplers (INPUT_STREAM = 0, WEIGHT_STREAM = 1).
SAMPLER_STREAM = 2
# scipy's Sobol' direction numbers (Joe & Kuo 2008) cover this many dimensions.
MAX_SOBOL_DIMENSIONS = 21201
# Largest uniform below 1 in float64: 1 − U of an open uniform must stay open for Q(1 − U).
_BELOW_ONE = float(np.nextafter(1.0, 0.0))


class Sampler(ABC):
    """How the input draws of one explanation are laid out."""

    name: ClassVar[str]
    structured: ClassVar[bool] = False  # units are point sets sized by ``samples / replicates``

    def unit_draws(self, samples: int, replicates: int) -> int:
        """Draws per unit for ``samples`` draws in ``replicates`` randomisations."""
        return 1

    def check(
        self, samples: int, replicates: int, features: int | None, field: str = "method.samples"
    ) -> None:
        """Raise :class:`InvalidArgumentError` when ``samples`` cannot be laid out by this sampler
        (any number of draws can, unless a sampler says otherwise)."""
        return None

    @abstractmethod
    def rows(self, draws: SampledDraws, a: int, b: int, start: int, stop: int) -> np.ndarray:
        """Draws ``c`` in ``[start, stop)`` at coordinates ``(a, b)``, ``(stop − start, D)``."""


class IidSampler(Sampler):
    name = "iid"

    def rows(self, draws: SampledDraws, a: int, b: int, start: int, stop: int) -> np.ndarray:
        return draws.streams.rows(a, b, start, stop)


class AntitheticSampler(Sampler):
    name = "antithetic"

    def unit_draws(self, samples: int, replicates: int) -> int:
        return 2

    def check(
        self, samples: int, replicates: int, features: int | None, field: str = "method.samples"
    ) -> None:
        if samples % 2:
            raise InvalidArgumentError(
                f"{field}: the antithetic sampler draws pairs (u, −u); expected an even number; got {samples}"
            )

    def rows(self, draws: SampledDraws, a: int, b: int, start: int, stop: int) -> np.ndarray:
        first, last = start // 2, (stop - 1) // 2 + 1
        base = draws.cached_rows(a, b, first, last)
        out = np.repeat(base, 2, axis=0)[start - 2 * first : stop - 2 * first]
        odd = np.arange(start, stop) % 2 == 1
        if draws.noise.direct:
            out[odd] = -out[odd]
        else:
            out[odd] = np.minimum(1.0 - out[odd], _BELOW_ONE)
        return out


class _PointSetSampler(Sampler):
    """Units are independent randomisations of a ``Q``-point set, ``Q = samples / replicates``."""

    structured = True

    def unit_draws(self, samples: int, replicates: int) -> int:
        return max(1, samples // replicates)

    def check(
        self, samples: int, replicates: int, features: int | None, field: str = "method.samples"
    ) -> None:
        if replicates < 2:
            raise InvalidArgumentError(
                f"method.replicates: the {self.name} sampler needs at least 2 independent randomisations for a "
                f"standard error; got {replicates}"
            )
        if samples % replicates:
            raise InvalidArgumentError(
                f"{field}: the {self.name} sampler splits the draws into {replicates} equal point sets "
                f"(method.replicates); expected a multiple of {replicates}; got {samples}"
            )

    @abstractmethod
    def points(self, generator: np.random.Generator, count: int, features: int) -> np.ndarray:
        """One randomised point set, ``(count, features)`` uniforms in ``[0, 1)``."""

    def rows(self, draws: SampledDraws, a: int, b: int, start: int, stop: int) -> np.ndarray:
        size = draws.unit_draws
        out = np.empty((stop - start, draws.features), dtype=draws.noise.draw_dtype)
        c = start
        while c < stop:
            unit, row = divmod(c, size)
            end = min(stop, (unit + 1) * size)
            design = draws.design(a, b, unit, self)
            out[c - start : end - start] = design[row : row + end - c]
            c = end
        return out


class LatinHypercubeSampler(_PointSetSampler):
    name = "latin_hypercube"

    def points(self, generator: np.random.Generator, count: int, features: int) -> np.ndarray:
        strata = generator.random((count, features)).argsort(axis=0)  # one random permutation per feature
        return (strata + generator.random((count, features))) / count


class SobolSampler(_PointSetSampler):
    name = "sobol"

    def check(
        self, samples: int, replicates: int, features: int | None, field: str = "method.samples"
    ) -> None:
        super().check(samples, replicates, features, field)
        if features is not None and features > MAX_SOBOL_DIMENSIONS:
            raise InvalidArgumentError(
                f"method.sampler: Sobol' points exist for at most {MAX_SOBOL_DIMENSIONS} features; the input has "
                f"{features} (use the latin_hypercube or antithetic sampler)"
            )

    def points(self, generator: np.random.Generator, count: int, features: int) -> np.ndarray:
        engine = qmc.Sobol(d=features, scramble=True, seed=generator)
        with warnings.catch_warnings():
            # A point count that is not a power of two loses some balance, not validity.
            warnings.simplefilter("ignore", UserWarning)
            points: np.ndarray = engine.random(count)
            return points


_REGISTRY: dict[str, Sampler] = {
    sampler.name: sampler
    for sampler in (IidSampler(), AntitheticSampler(), LatinHypercubeSampler(), SobolSampler())
}
SAMPLER_NAMES: tuple[str, ...] = tuple(_REGISTRY)


def get_sampler(name: str, field: str = "method.sampler") -> Sampler:
    """The sampler called ``name``; :class:`InvalidArgumentError` naming ``field`` otherwise."""
    try:
        return _REGISTRY[name]
    except (KeyError, TypeError):
        raise InvalidArgumentError(
            f"{field}: expected one of {', '.join(SAMPLER_NAMES)}; got {name!r}"
        ) from None


class SampledDraws:
    """Rows of input draws laid out by a sampler, addressed like :class:`~estimator.noise.DrawStreams`.

    Args:
        noise: the resolved input noise (decides the draw type).
        seed: the explanation's seed.
        sampler: the layout.
        unit_draws: draws per unit (:meth:`Sampler.unit_draws`).
        repeats: the last draw may be asked for again (outer-smoothed IG spans rows).
    """

    def __init__(
        self, noise: InputNoise, seed: int, sampler: Sampler, unit_draws: int, repeats: bool = False
    ) -> None:
        self.noise = noise
        self.seed = seed
        self.sampler = sampler
        self.unit_draws = unit_draws
        self.features = int(noise.lower.shape[0])
        self.streams = DrawStreams(noise, seed, repeats=repeats)
        self._last: tuple[int, int, int, np.ndarray] | None = None  # (a, b, index, row) of the base stream
        self._design: tuple[tuple[int, int, int], np.ndarray] | None = None

    def rows(self, a: int, b: int, start: int, stop: int) -> np.ndarray:
        """Draws ``c`` in ``[start, stop)`` at ``(a, b)``, ``(stop − start, D)`` of the noise's draw dtype."""
        return self.sampler.rows(self, a, b, start, stop)

    def cached_rows(self, a: int, b: int, start: int, stop: int) -> np.ndarray:
        """Base-stream rows ``[start, stop)``; the last row of the previous request is kept, so a pair
        split between two chunks is drawn once."""
        if self._last is not None and self._last[:3] == (a, b, start) and stop > start:
            rest = self.streams.rows(a, b, start + 1, stop) if stop > start + 1 else None
            rows = self._last[3][None] if rest is None else np.concatenate([self._last[3][None], rest])
        else:
            rows = self.streams.rows(a, b, start, stop)
        self._last = (a, b, stop - 1, rows[-1].copy())
        return rows

    def design(self, a: int, b: int, unit: int, sampler: _PointSetSampler) -> np.ndarray:
        """The point set of one unit as draws, ``(unit_draws, D)``, built once while it is in use."""
        key = (a, b, unit)
        if self._design is None or self._design[0] != key:
            generator = block_generator(self.seed, SAMPLER_STREAM, a, b, unit)
            uniforms = sampler.points(generator, self.unit_draws, self.features)
            np.clip(uniforms, TINY_UNIFORM, _BELOW_ONE, out=uniforms)
            draws: Any = special.ndtri(uniforms).astype(np.float32) if self.noise.direct else uniforms
            self._design = (key, draws)
        return self._design[1]
