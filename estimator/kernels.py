"""Unit-scale smoothing kernels for Monte Carlo gradient mollification (docs/method.md §3).

The five kernels of Zhou et al. 2024, "Axiomatization of Gradient Smoothing in Neural Networks"
with this project's definitions of density, CDF and quantile. A kernel of scale ε is
``k(u / ε) / ε``; draws are ``ε · Q(U)`` with ``U ~ Uniform(0, 1)`` (inverse-CDF sampling), so a
truncated kernel is the same formula with ``U`` restricted to a sub-interval.

Adding a kernel is one class here and one entry in ``_REGISTRY``. Imports numpy and scipy only.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import ClassVar

import numpy as np
from numpy.typing import ArrayLike
from scipy import special

from .errors import InvalidArgumentError

__all__ = [
    "KERNEL_NAMES",
    "GaussianKernel",
    "HyperbolicKernel",
    "Kernel",
    "TINY_UNIFORM",
    "PoissonKernel",
    "RectKernel",
    "SigmoidKernel",
    "get_kernel",
    "open_uniform",
]

# Smallest value open_uniform returns: keeps Q(U) finite for kernels with unbounded support.
TINY_UNIFORM = 2.0**-54


def open_uniform(rng: np.random.Generator, shape: tuple[int, ...] | int) -> np.ndarray:
    """Draw ``Uniform(0, 1)`` values strictly inside the open interval (float64).

    ``Generator.random`` returns ``k / 2**53`` for ``k`` in ``[0, 2**53)``; only 0 must be moved
    (the top value is already below 1), which changes the distribution by at most ``2**-53``.
    """
    return np.maximum(rng.random(shape), TINY_UNIFORM)


class Kernel(ABC):
    """A symmetric unit-scale density on the real line, usable as a product kernel per feature.

    Every method is elementwise over float64 arrays; ``t`` may hold ``±inf``.
    """

    name: ClassVar[str]
    # Tails so heavy that unrestricted draws reach absurd inputs (the Cauchy density: |Q(U)| up to
    # 1e16); input noise restricts them to a window around the point (estimator.noise.HEAVY_TAIL_WINDOW).
    heavy_tailed: ClassVar[bool] = False

    @abstractmethod
    def pdf(self, t: ArrayLike) -> np.ndarray:
        """Density ``k(t)``."""

    @abstractmethod
    def cdf(self, t: ArrayLike) -> np.ndarray:
        """Distribution function ``∫_{-∞}^t k``; 0 at ``-inf`` and 1 at ``+inf``."""

    @abstractmethod
    def ppf(self, p: ArrayLike) -> np.ndarray:
        """Quantile ``Q(p)``, the inverse of :meth:`cdf` on ``(0, 1)``."""

    def sample(self, shape: tuple[int, ...] | int, rng: np.random.Generator) -> np.ndarray:
        """Unit-scale draws ``Q(U)``, ``U ~ Uniform(0, 1)``, float64 of ``shape``."""
        return self.ppf(open_uniform(rng, shape))

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class GaussianKernel(Kernel):
    """``k(t) = exp(-t²/2)/√(2π)``: SmoothGrad's noise (Smilkov et al. 2017) and AdaptGrad's
    (Zhou et al. 2024, AdaptGrad)."""

    name = "gaussian"

    def pdf(self, t: ArrayLike) -> np.ndarray:
        t = np.asarray(t, dtype=np.float64)
        density: np.ndarray = np.exp(-0.5 * t * t) / np.sqrt(2.0 * np.pi)
        return density

    def cdf(self, t: ArrayLike) -> np.ndarray:
        return np.asarray(special.ndtr(np.asarray(t, dtype=np.float64)))

    def ppf(self, p: ArrayLike) -> np.ndarray:
        return np.asarray(special.ndtri(np.asarray(p, dtype=np.float64)))


class PoissonKernel(Kernel):
    """The Poisson kernel of the half-plane, i.e. the Cauchy density ``1/(π(1 + t²))``."""

    name = "poisson"
    heavy_tailed = True

    def pdf(self, t: ArrayLike) -> np.ndarray:
        t = np.asarray(t, dtype=np.float64)
        density: np.ndarray = 1.0 / (np.pi * (1.0 + t * t))
        return density

    def cdf(self, t: ArrayLike) -> np.ndarray:
        return 0.5 + np.arctan(np.asarray(t, dtype=np.float64)) / np.pi

    def ppf(self, p: ArrayLike) -> np.ndarray:
        return np.tan(np.pi * (np.asarray(p, dtype=np.float64) - 0.5))


class HyperbolicKernel(Kernel):
    """The hyperbolic secant density ``sech(t)/π``."""

    name = "hyperbolic"

    def pdf(self, t: ArrayLike) -> np.ndarray:
        # sech written with exp(-|t|) so that large |t| underflows to 0 instead of overflowing cosh.
        e = np.exp(-np.abs(np.asarray(t, dtype=np.float64)))
        return 2.0 * e / (1.0 + e * e) / np.pi

    def cdf(self, t: ArrayLike) -> np.ndarray:
        t = np.asarray(t, dtype=np.float64)
        # (2/π)·atan(e^t), evaluated through e^{-|t|} and atan(e^t) = π/2 − atan(e^{-t}) to avoid overflow.
        lower_tail = (2.0 / np.pi) * np.arctan(np.exp(-np.abs(t)))
        probability: np.ndarray = np.where(t <= 0.0, lower_tail, 1.0 - lower_tail)
        return probability

    def ppf(self, p: ArrayLike) -> np.ndarray:
        return np.log(np.tan(0.5 * np.pi * np.asarray(p, dtype=np.float64)))


class SigmoidKernel(Kernel):
    """The logistic density ``e^{-t}/(1 + e^{-t})²``, the derivative of the sigmoid."""

    name = "sigmoid"

    def pdf(self, t: ArrayLike) -> np.ndarray:
        s = special.expit(np.asarray(t, dtype=np.float64))
        return np.asarray(s * (1.0 - s))

    def cdf(self, t: ArrayLike) -> np.ndarray:
        return np.asarray(special.expit(np.asarray(t, dtype=np.float64)))

    def ppf(self, p: ArrayLike) -> np.ndarray:
        return np.asarray(special.logit(np.asarray(p, dtype=np.float64)))


class RectKernel(Kernel):
    """The uniform density ``1/2`` on ``[-1, 1]`` (the axiomatization paper's "Rect")."""

    name = "rect"

    def pdf(self, t: ArrayLike) -> np.ndarray:
        t = np.asarray(t, dtype=np.float64)
        return np.where(np.abs(t) <= 1.0, 0.5, 0.0)

    def cdf(self, t: ArrayLike) -> np.ndarray:
        return np.clip((np.asarray(t, dtype=np.float64) + 1.0) / 2.0, 0.0, 1.0)

    def ppf(self, p: ArrayLike) -> np.ndarray:
        return 2.0 * np.asarray(p, dtype=np.float64) - 1.0


_REGISTRY: dict[str, Kernel] = {
    kernel.name: kernel
    for kernel in (GaussianKernel(), PoissonKernel(), HyperbolicKernel(), SigmoidKernel(), RectKernel())
}

KERNEL_NAMES: tuple[str, ...] = tuple(_REGISTRY)


def get_kernel(name: str, field: str = "kernel") -> Kernel:
    """Look a kernel up by name.

    Args:
        name: one of :data:`KERNEL_NAMES`.
        field: the request field named in the error message.

    Raises:
        InvalidArgumentError: unknown name; the message lists the known names.
    """
    kernel = _REGISTRY.get(name) if isinstance(name, str) else None
    if kernel is None:
        raise InvalidArgumentError(f"{field}: expected one of {', '.join(KERNEL_NAMES)}; got {name!r}")
    return kernel
