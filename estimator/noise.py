"""Counter-based random streams and the input-noise policies (SPEC.md §2.2, §2.6).

Every random number is drawn from a Philox generator keyed by ``(seed, stream)`` with its counter
set from the draw's coordinates, so a draw depends only on ``(seed, coordinates)`` and never on the
order or batching of the work (Salmon et al. 2011, "Parallel random numbers: as easy as 1, 2, 3").
Imports numpy and scipy only.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .kernels import Kernel, open_uniform
from .scales import _adaptive_scale, _inherent_noise, truncated_offsets

__all__ = ["INPUT_STREAM", "WEIGHT_STREAM", "InputNoise", "stream_generator"]

INPUT_STREAM = 0
WEIGHT_STREAM = 1


def stream_generator(seed: int, stream: int, a: int = 0, b: int = 0, c: int = 0) -> np.random.Generator:
    """A generator for the draw at coordinates ``(a, b, c)`` of ``stream`` under ``seed``.

    The three coordinates fill the high 192 bits of Philox's 256-bit counter; the low 64 bits count
    the blocks one draw consumes, so distinct coordinates never share random numbers.
    """
    key = np.array([seed, stream], dtype=np.uint64)
    counter = np.array([0, a, b, c], dtype=np.uint64)
    return np.random.Generator(np.random.Philox(key=key, counter=counter))


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

    def uniforms(self, generator: np.random.Generator) -> np.ndarray:
        """One row of ``U ~ Uniform(0, 1)`` draws, ``(D,)``."""
        return open_uniform(generator, self.lower.shape[0])

    def offsets(self, uniforms: np.ndarray, centers: np.ndarray) -> np.ndarray:
        """Noise ``u`` for uniforms and centers of shape ``(B, D)``: ``ε·Q(U)``, or truncated to the domain."""
        scale = self.scale_at(centers)
        if self.policy == "truncated":
            return truncated_offsets(uniforms, centers, self.lower, self.upper, scale, self.kernel)
        return scale * self.kernel.ppf(uniforms)

    def noisy(self, uniforms: np.ndarray, centers: np.ndarray) -> np.ndarray:
        """``centers + u``; truncated draws are clipped into the domain against float rounding."""
        points = centers + self.offsets(uniforms, centers)
        if self.policy == "truncated":
            np.clip(points, self.lower, self.upper, out=points)
        return points

    def inherent_noise(self, centers: np.ndarray) -> float:
        """Mean over ``centers`` (``(B, D)``) and features of the out-of-domain probability (seed 001 Eq. 9–10)."""
        if self.policy == "truncated":
            return 0.0
        values = _inherent_noise(centers, self.lower, self.upper, self.scale_at(centers), self.kernel)
        return float(values.mean())
