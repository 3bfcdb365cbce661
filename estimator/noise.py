"""Counter-based random streams and the input-noise policies (SPEC.md §2.2, §2.6).

Every random number is drawn from a Philox generator keyed by ``(seed, stream)`` with its counter
set from the draw's coordinates, so a draw depends only on ``(seed, coordinates)`` and never on the
order or batching of the work (Salmon et al. 2011, "Parallel random numbers: as easy as 1, 2, 3").
Input noise shares one generator among a fixed block of :data:`BLOCK_DRAWS` consecutive draws
(:class:`DrawStreams`): creating a generator per draw costs more than drawing a small instance. Those
generators draw a whole instance each time, so they use SFC64 (a third faster than Philox under the
ziggurat) seeded through ``SeedSequence(seed, spawn_key=coordinates)``, numpy's scheme for
independent streams.
Imports numpy and scipy only.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .kernels import GaussianKernel, Kernel, open_uniform
from .scales import _adaptive_scale, _inherent_noise, truncated_offsets

__all__ = [
    "BLOCK_DRAWS",
    "INPUT_STREAM",
    "WEIGHT_STREAM",
    "DrawStreams",
    "InputNoise",
    "block_generator",
    "stream_generator",
]

INPUT_STREAM = 0
WEIGHT_STREAM = 1
# Draws per generator of DrawStreams: draw c is row c % BLOCK_DRAWS of block c // BLOCK_DRAWS.
BLOCK_DRAWS = 64


def stream_generator(seed: int, stream: int, a: int = 0, b: int = 0, c: int = 0) -> np.random.Generator:
    """A generator for the draw at coordinates ``(a, b, c)`` of ``stream`` under ``seed``.

    The three coordinates fill the high 192 bits of Philox's 256-bit counter; the low 64 bits count
    the blocks one draw consumes, so distinct coordinates never share random numbers.
    """
    key = np.array([seed, stream], dtype=np.uint64)
    counter = np.array([0, a, b, c], dtype=np.uint64)
    return np.random.Generator(np.random.Philox(key=key, counter=counter))


def block_generator(seed: int, stream: int, a: int = 0, b: int = 0, c: int = 0) -> np.random.Generator:
    """An SFC64 generator for the block at coordinates ``(a, b, c)`` of ``stream`` under ``seed``."""
    return np.random.Generator(np.random.SFC64(np.random.SeedSequence(seed, spawn_key=(stream, a, b, c))))


@dataclass(frozen=True)
class InputNoise:
    """A resolved input-noise policy over flattened features (all arrays float64 of shape ``(D,)``).

    Attributes:
        kernel: the unit-scale kernel.
        policy: ``fixed``, ``adaptive`` or ``truncated``.
        lower, upper: the data domain.
        fixed_scale: ε for ``fixed`` and ``truncated``; unused for ``adaptive``.
        quantile: ``Q(p)`` for ``adaptive`` (see :func:`estimator.scales.adaptive_quantile_level`).
    """

    kernel: Kernel
    policy: str
    lower: np.ndarray
    upper: np.ndarray
    fixed_scale: np.ndarray
    quantile: float

    def scale_at(self, centers: np.ndarray) -> np.ndarray:
        """ε at each center, shape of ``centers`` (``(B, D)``)."""
        if self.policy == "adaptive":
            return _adaptive_scale(centers, self.lower, self.upper, self.quantile)
        return np.broadcast_to(self.fixed_scale, centers.shape)

    @property
    def direct(self) -> bool:
        """Whether draws are unit-scale kernel values (gaussian, untruncated) rather than uniforms.

        The ziggurat draws ``N(0, 1)`` exactly like ``Q(U)`` does, at a fraction of the cost of ``ndtri``;
        truncation needs the inverse CDF.
        """
        return isinstance(self.kernel, GaussianKernel) and self.policy != "truncated"

    def draws(self, generator: np.random.Generator, rows: int) -> np.ndarray:
        """``rows`` consecutive rows of draws, ``(rows, D)`` float64: ``N(0, 1)`` when :attr:`direct`,
        else open ``Uniform(0, 1)``."""
        shape = (rows, self.lower.shape[0])
        if self.direct:
            return generator.standard_normal(shape)
        return open_uniform(generator, shape)

    def scale_of(self, centers: np.ndarray) -> np.ndarray:
        """:meth:`scale_at`, computed once when every row of ``centers`` is the same broadcast row."""
        if centers.ndim == 2 and centers.shape[0] > 1 and centers.strides[0] == 0:
            return self.scale_at(centers[:1])
        return self.scale_at(centers)

    def offsets(self, draws: np.ndarray, centers: np.ndarray) -> np.ndarray:
        """Noise ``u`` for :meth:`draws` and centers of shape ``(B, D)``: ``ε·Q(U)`` (``ε·z`` when
        :attr:`direct`), or truncated to the domain."""
        scale = self.scale_of(centers)
        if self.policy == "truncated":
            return truncated_offsets(draws, centers, self.lower, self.upper, scale, self.kernel)
        if self.direct:
            return scale * draws
        return scale * self.kernel.ppf(draws)

    def noisy(self, draws: np.ndarray, centers: np.ndarray) -> np.ndarray:
        """``centers + u``; truncated draws are clipped into the domain against float rounding.

        ``draws`` may be overwritten.
        """
        if self.direct:
            points = np.multiply(draws, self.scale_of(centers), out=draws)
            points += centers
            return points
        points = centers + self.offsets(draws, centers)
        if self.policy == "truncated":
            np.clip(points, self.lower, self.upper, out=points)
        return points

    def inherent_noise(self, centers: np.ndarray) -> float:
        """Mean over ``centers`` (``(B, D)``) and features of the out-of-domain probability (seed 001 Eq. 9–10)."""
        if self.policy == "truncated":
            return 0.0
        values = _inherent_noise(centers, self.lower, self.upper, self.scale_at(centers), self.kernel)
        return float(values.mean())


class DrawStreams:
    """Rows of input-noise draws addressed by ``(a, b, c)``, each depending only on ``(seed, a, b, c)``.

    Draw ``c`` is row ``c % BLOCK_DRAWS`` of the generator ``block_generator(seed, INPUT_STREAM, a, b,
    c // BLOCK_DRAWS)``, which yields its rows one after another. Open generators are kept between
    calls, so rows requested in increasing ``c`` (as the chunks of one explanation do) are drawn once;
    any other order regenerates the block up to the row, with the same result.
    """

    def __init__(self, noise: InputNoise, seed: int, repeats: bool = False) -> None:
        """``repeats``: the last row drawn may be asked for again (samples spanning several rows)."""
        self.noise = noise
        self.seed = seed
        self.repeats = repeats
        # (a, b, block) -> (generator, next row, copy of the last row drawn when ``repeats``)
        self._open: dict[tuple[int, int, int], tuple[np.random.Generator, int, np.ndarray | None]] = {}

    def rows(self, a: int, b: int, start: int, stop: int) -> np.ndarray:
        """Draws ``c`` in ``[start, stop)`` at coordinates ``(a, b)``, ``(stop − start, D)`` float64."""
        parts = []
        c = start
        while c < stop:
            block, row = divmod(c, BLOCK_DRAWS)
            end = min(stop, (block + 1) * BLOCK_DRAWS)
            parts.append(self._block_rows(a, b, block, row, end - block * BLOCK_DRAWS))
            c = end
        return parts[0] if len(parts) == 1 else np.concatenate(parts)

    def _block_rows(self, a: int, b: int, block: int, row: int, end: int) -> np.ndarray:
        key = (a, b, block)
        state = self._open.get(key)
        prefix = None
        if state is not None and state[2] is not None and row == state[1] - 1:
            prefix = state[2][None, :]
            row += 1
            if row == end:
                return np.array(prefix)
        if state is None or row != state[1]:
            state = (block_generator(self.seed, INPUT_STREAM, a, b, block), 0, None)
            if row > 0:
                self.noise.draws(state[0], row)
            if self.repeats:
                self._open.pop((a, b, block - 1), None)
        drawn = self.noise.draws(state[0], end - row)
        if self.repeats:
            self._open[key] = (state[0], end, drawn[-1].copy())
        elif end < BLOCK_DRAWS:
            self._open[key] = (state[0], end, None)
        else:
            self._open.pop(key, None)
        return drawn if prefix is None else np.concatenate([prefix, drawn])
