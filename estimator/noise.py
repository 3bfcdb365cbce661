"""Counter-based random streams and the input-noise policies (docs/method.md §4, §12).

Every random number is drawn from a Philox generator keyed by ``(seed, stream)`` with its counter
set from the draw's coordinates, so a draw depends only on ``(seed, coordinates)`` and never on the
order or batching of the work (Salmon et al. 2011, "Parallel random numbers: as easy as 1, 2, 3").
Input noise shares one generator among a fixed block of consecutive draws (:class:`DrawStreams`,
:func:`block_rows`: 64 for small instances, where creating a generator per draw costs more than
drawing one; down to one draw per generator for large instances, whose blocks fill in parallel).
Those generators draw a whole instance each time, so they use SFC64 (cheaper per word than Philox)
seeded through ``SeedSequence(seed, spawn_key=coordinates)``, numpy's scheme for independent
streams; Gaussian noise comes from them by Box–Muller (:func:`standard_normal_rows`).
Imports numpy and scipy only.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from .kernels import TINY_UNIFORM, GaussianKernel, Kernel, open_uniform
from .parallel import for_each_slice
from .scales import _adaptive_scale, _inherent_noise, truncated_offsets

__all__ = [
    "BLOCK_DRAWS",
    "BLOCK_VALUES",
    "HEAVY_TAIL_WINDOW",
    "INPUT_STREAM",
    "WEIGHT_STREAM",
    "DrawStreams",
    "InputNoise",
    "block_generator",
    "block_rows",
    "standard_normal_rows",
    "stream_generator",
]

INPUT_STREAM = 0
WEIGHT_STREAM = 1
# Input noise of a heavy-tailed kernel (the Cauchy density) is restricted to x ± this many input
# ranges (upper − lower): unrestricted, one draw in 10⁴ lands 3 000 ranges away and some networks
# overflow there. At SmoothGrad's α = 0.2 the window holds all but 0.13 % of the kernel's mass.
HEAVY_TAIL_WINDOW = 100.0
# Draws per generator of DrawStreams: draw c is row c % B of block c // B, with B = BLOCK_DRAWS for
# instances of up to BLOCK_VALUES / BLOCK_DRAWS features and fewer above (see block_rows).
BLOCK_DRAWS = 64
BLOCK_VALUES = 1 << 16


def block_rows(features: int) -> int:
    """Draws per generator for instances of ``features`` values.

    :data:`BLOCK_DRAWS` for small instances (creating a generator costs more than drawing a small
    instance); fewer for large ones, down to one per draw, so that the rows of one chunk come from
    several generators that fill them in parallel.
    """
    return max(1, min(BLOCK_DRAWS, BLOCK_VALUES // max(1, int(features))))


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

        :func:`standard_normal_rows` draws ``N(0, 1)`` at a fraction of the cost of ``Q(U)`` with
        ``ndtri``; truncation needs the inverse CDF.
        """
        return isinstance(self.kernel, GaussianKernel) and self.policy != "truncated"

    @property
    def draw_dtype(self) -> type[np.floating[Any]]:
        """float32 for :attr:`direct` draws (the model's precision), float64 for uniforms."""
        return np.float32 if self.direct else np.float64

    def draws(self, generator: np.random.Generator, rows: int, out: np.ndarray | None = None) -> np.ndarray:
        """``rows`` consecutive rows of draws, ``(rows, D)`` of :attr:`draw_dtype`: ``N(0, 1)`` when
        :attr:`direct`, else open ``Uniform(0, 1)``; written into ``out`` (C-contiguous) when given."""
        shape = (rows, self.lower.shape[0])
        if self.direct:
            return standard_normal_rows(generator, rows, shape[1], out)
        if out is None:
            return open_uniform(generator, shape)
        generator.random(out=out)
        uniforms: np.ndarray = np.maximum(out, TINY_UNIFORM, out=out)
        return uniforms

    def scale_of(self, centers: np.ndarray) -> np.ndarray:
        """:meth:`scale_at` of shape ``centers.shape``; when every row of ``centers`` is the same
        broadcast row (stride 0), computed once and returned as a broadcast row too, whatever the
        number of rows, so that callers share it the same way for every chunk size."""
        if centers.ndim == 2 and centers.strides[0] == 0:
            return np.broadcast_to(self.scale_at(centers[:1])[0], centers.shape)
        return self.scale_at(centers)

    def offsets(self, draws: np.ndarray, centers: np.ndarray) -> np.ndarray:
        """Noise ``u`` for :meth:`draws` and centers of shape ``(B, D)``: ``ε·Q(U)`` (``ε·z`` when
        :attr:`direct`), or truncated to the domain."""
        scale = self.scale_of(centers)
        if self.policy == "truncated":
            return truncated_offsets(draws, centers, self.lower, self.upper, scale, self.kernel)
        if self.kernel.heavy_tailed:
            window = self._window()
            return truncated_offsets(draws, 0.0, -window, window, scale, self.kernel)  # type: ignore[arg-type]
        offsets: np.ndarray = scale * draws if self.direct else scale * self.kernel.ppf(draws)
        return offsets

    def noisy(self, draws: np.ndarray, centers: np.ndarray) -> np.ndarray:
        """``centers + u``; truncated draws are clipped into the domain against float rounding.

        ``draws`` may be overwritten.
        """
        if self.direct:
            # In the draws' float32, with a shared row of scales or centers cast once.
            scale, shared_scale = _shared_row(self.scale_of(centers))
            center, shared_center = _shared_row(centers)

            def shift(start: int, stop: int) -> None:
                rows = draws[start:stop]
                np.multiply(rows, scale if shared_scale else scale[start:stop], out=rows)
                np.add(rows, center if shared_center else center[start:stop], out=rows)

            for_each_slice(shift, draws.shape[0], draws.shape[1])
            return draws
        points: np.ndarray = centers + self.offsets(draws, centers)
        if self.policy == "truncated":
            np.clip(points, self.lower, self.upper, out=points)
        return points

    def _window(self) -> np.ndarray:
        """Half-width of the window that heavy-tailed draws are restricted to, ``(D,)``."""
        window: np.ndarray = HEAVY_TAIL_WINDOW * (self.upper - self.lower)
        return window

    def inherent_noise(self, centers: np.ndarray) -> float:
        """Mean over ``centers`` (``(B, D)``) and features of the out-of-domain probability
        (Zhou et al. 2024, AdaptGrad, Eq. 9–10), for the kernel as sampled (restricted to its window
        when heavy-tailed)."""
        if self.policy == "truncated":
            return 0.0
        scale = self.scale_at(centers)
        values = _inherent_noise(centers, self.lower, self.upper, scale, self.kernel)
        if self.kernel.heavy_tailed:
            # The domain lies inside the window: P(leave | in window) = 1 − (1 − A) / P(in window).
            half = self._window() / np.where(scale > 0, scale, 1.0)
            in_window = np.where(scale > 0, self.kernel.cdf(half) - self.kernel.cdf(-half), 1.0)
            values = np.clip(1.0 - (1.0 - values) / in_window, 0.0, 1.0)
        return float(values.mean())


def _shared_row(values: np.ndarray) -> tuple[np.ndarray, bool]:
    """``(row, True)`` as float32 when ``values`` (``(B, D)``) broadcasts one row (stride 0, whatever
    ``B``: the choice must not depend on the chunk size), else ``(values, False)``."""
    if values.strides[0] == 0:
        return values[:1].astype(np.float32), True
    return values, False


# Box–Muller pairs from one 64-bit word each: its top 40 bits give the radius's uniform
# ((k + ½)·2⁻⁴⁰, so |z| < 7.6: the normal's mass beyond is below 1e-13), the low 24 bits the angle.
_RADIUS_SHIFT = np.uint64(24)
_ANGLE_MASK = np.uint64((1 << 24) - 1)


def standard_normal_rows(
    generator: np.random.Generator, rows: int, features: int, out: np.ndarray | None = None
) -> np.ndarray:
    """``(rows, features)`` standard normal float32 draws, row after row from ``generator``.

    Box–Muller (Box & Muller 1958) on one 64-bit word per pair: row ``r`` holds ``R·cos Θ`` of its
    ``⌈features/2⌉`` pairs, then ``R·sin Θ`` of the first ``⌊features/2⌋``. A row always consumes
    ``⌈features/2⌉`` words, so rows drawn in pieces equal rows drawn at once. The radius
    ``√(−2 ln U)`` is computed in float64, the angle in float32 (numpy's vectorised sin and cos):
    about twice as fast as numpy's ziggurat, which is not vectorised.
    """
    pairs = (features + 1) // 2
    second = features - pairs
    words = generator.bit_generator.random_raw(rows * pairs).reshape(rows, pairs)
    radius = (words >> _RADIUS_SHIFT).astype(np.float64)
    radius += 0.5
    radius *= 2.0**-40
    np.log(radius, out=radius)
    radius *= -2.0
    np.sqrt(radius, out=radius)
    radius32 = radius.astype(np.float32)
    angle = (words & _ANGLE_MASK).astype(np.float32)
    angle *= np.float32(2.0 * np.pi / (1 << 24))
    if out is None:
        out = np.empty((rows, features), dtype=np.float32)
    np.sin(angle[:, :second], out=out[:, pairs:])
    np.cos(angle, out=out[:, :pairs])
    out[:, :pairs] *= radius32
    out[:, pairs:] *= radius32[:, :second]
    return out


class DrawStreams:
    """Rows of input-noise draws addressed by ``(a, b, c)``, each depending only on ``(seed, a, b, c)``.

    Draw ``c`` is row ``c % B`` of the generator ``block_generator(seed, INPUT_STREAM, a, b, c // B)``,
    which yields its rows one after another; ``B = block_rows(D)`` for instances of ``D`` features.
    Rows of several blocks are drawn in parallel (:mod:`estimator.parallel`). Open generators are
    kept between calls, so rows requested in increasing ``c`` (as the chunks of one explanation do)
    are drawn once; any other order regenerates the block up to the row, with the same result.
    """

    def __init__(self, noise: InputNoise, seed: int, repeats: bool = False) -> None:
        """``repeats``: the last row drawn may be asked for again (samples spanning several rows)."""
        self.noise = noise
        self.seed = seed
        self.repeats = repeats
        self.features = int(noise.lower.shape[0])
        self.block_rows = block_rows(self.features)
        # (a, b, block) -> (generator, next row, copy of the last row drawn when ``repeats``)
        self._open: dict[tuple[int, int, int], tuple[np.random.Generator, int, np.ndarray | None]] = {}

    def rows(self, a: int, b: int, start: int, stop: int) -> np.ndarray:
        """Draws ``c`` in ``[start, stop)`` at coordinates ``(a, b)``, ``(stop − start, D)`` of the
        noise's ``draw_dtype``."""
        out = np.empty((stop - start, self.features), dtype=self.noise.draw_dtype)
        pieces = []  # (block, first row, end row, offset in out)
        c = start
        while c < stop:
            block, row = divmod(c, self.block_rows)
            end = min(stop, (block + 1) * self.block_rows)
            pieces.append((block, row, end - block * self.block_rows, c - start))
            c = end

        def fill(first: int, last: int) -> None:
            for block, row, end, offset in pieces[first:last]:
                self._block_rows(a, b, block, row, end, out[offset : offset + end - row])

        if self.repeats:
            # A block may forget its predecessor's state (see _block_rows): one thread.
            fill(0, len(pieces))
        else:
            for_each_slice(fill, len(pieces), self.block_rows * self.features)
        return out

    def _block_rows(self, a: int, b: int, block: int, row: int, end: int, out: np.ndarray) -> None:
        """Rows ``[row, end)`` of one block into ``out``; touches only this block's entry (and, with
        ``repeats``, its predecessor's), so distinct blocks may be drawn concurrently."""
        key = (a, b, block)
        state = self._open.get(key)
        if state is not None and state[2] is not None and row == state[1] - 1:
            out[0] = state[2]
            out = out[1:]
            row += 1
            if row == end:
                return
        if state is None or row != state[1]:
            state = (block_generator(self.seed, INPUT_STREAM, a, b, block), 0, None)
            if row > 0:
                self.noise.draws(state[0], row)
            if self.repeats:
                self._open.pop((a, b, block - 1), None)
        self.noise.draws(state[0], end - row, out=out)
        if self.repeats:
            self._open[key] = (state[0], end, out[-1].copy())
        elif end < self.block_rows:
            self._open[key] = (state[0], end, None)
        else:
            self._open.pop(key, None)
