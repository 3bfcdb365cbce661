"""Per-feature noise scales ε and the inherent noise they cause (docs/method.md §4–5).

- :func:`fixed_scale`: SmoothGrad's ``ε = α (x_max − x_min)`` (Smilkov et al. 2017), or an explicit σ
  (Vertex AI's ``noise_sigma`` / ``feature_noise_sigma``).
- :func:`adaptive_scale`: AdaptGrad (Zhou et al. 2024, AdaptGrad, Eq. 11–13) generalised to every kernel,
  ``ε_j = d_j / Q(p)`` with ``d_j`` the distance from ``x_j`` to the nearer bound.
- :func:`inherent_noise`: Zhou et al. 2024, AdaptGrad, Eq. 9–10, the probability that a noisy feature leaves the domain.
- :func:`truncated_offsets`: inverse-CDF draws restricted to the domain (beyond the papers).

Imports numpy and scipy only (through :mod:`estimator.kernels`).
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike

from ._checks import check_bounds, check_choice, check_float, check_float_array
from .errors import InvalidArgumentError
from .kernels import Kernel, get_kernel

__all__ = [
    "ADAPTIVE_RULES",
    "adaptive_quantile_level",
    "DOMAIN_SLACK",
    "adaptive_scale",
    "domain_slack",
    "fixed_scale",
    "inherent_noise",
    "snap_to_domain",
    "truncated_offsets",
]

ADAPTIVE_RULES: tuple[str, ...] = ("one_sided", "two_sided")
# Points this close outside the domain (relative to its range) count as on the bound: inputs
# normalised in float32 to a bound computed in float64 (e.g. (1 − mean)/std) land one float32
# rounding step beyond it.
DOMAIN_SLACK = 1e-6


def domain_slack(lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """How far outside ``[lo, hi]`` a point still counts as on the bound (float rounding), per feature."""
    slack: np.ndarray = DOMAIN_SLACK * (hi - lo)
    return slack


def snap_to_domain(x: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """``x`` with values within :func:`domain_slack` outside a bound moved onto it; others unchanged.

    All arguments broadcast together; float64 out.
    """
    clipped = np.clip(x, lo, hi)
    return np.where(np.abs(clipped - x) <= domain_slack(lo, hi), clipped, x)


def adaptive_quantile_level(confidence: float, rule: str = "one_sided") -> float:
    """The probability level ``p`` whose quantile maps the distance to a bound onto the kernel scale.

    ``one_sided`` is Eq. 13 of Zhou et al. 2024, AdaptGrad: ``p = (3 + c)/4`` (for the gaussian,
    ``Q(p) = √2·erfinv((1 + c)/2)``).
    ``two_sided`` is the authors' released code: ``p = (1 + c)/2`` (``Q(p) = √2·erfinv(c)``), i.e. the
    interval ``[-d, d]`` holds probability ``c``.
    """
    c = check_float(confidence, "confidence", open_unit=True)
    check_choice(rule, "adaptive_rule", ADAPTIVE_RULES)
    return (3.0 + c) / 4.0 if rule == "one_sided" else (1.0 + c) / 2.0


def _kernel(kernel: str | Kernel) -> Kernel:
    return kernel if isinstance(kernel, Kernel) else get_kernel(kernel)


def fixed_scale(
    lower: ArrayLike,
    upper: ArrayLike,
    alpha: float = 0.2,
    sigma: ArrayLike | None = None,
    shape: tuple[int, ...] | None = None,
) -> np.ndarray:
    """SmoothGrad's fixed scale, per feature.

    Args:
        lower, upper: domain bounds, scalars or arrays (broadcastable to ``shape``), ``lower < upper``.
        alpha: noise level as a fraction of the range ``upper − lower`` (> 0); SmoothGrad uses 0.2.
        sigma: explicit scale in input units (scalar or per-feature array, ≥ 0); overrides ``alpha``.
        shape: shape of the result (one instance); default the broadcast shape of the arguments.

    Returns:
        float64 array ``ε`` of ``shape``, in input units.
    """
    lo, hi = check_bounds(lower, upper, shape)
    out_shape = lo.shape
    if sigma is not None:
        s = check_float_array(sigma, "sigma", out_shape)
        if np.any(s < 0):
            raise InvalidArgumentError(f"sigma: expected values >= 0; got minimum {float(s.min())}")
        return np.array(np.broadcast_to(s, out_shape), dtype=np.float64)
    a = check_float(alpha, "alpha", positive=True)
    scale: np.ndarray = a * (hi - lo)
    return scale


def adaptive_scale(
    x: ArrayLike,
    lower: ArrayLike,
    upper: ArrayLike,
    confidence: float = 0.95,
    kernel: str | Kernel = "gaussian",
    rule: str = "one_sided",
) -> np.ndarray:
    """AdaptGrad's per-feature scale (Zhou et al. 2024, AdaptGrad, Eq. 11–13), for any kernel.

    ``d_j = min(x_j − x_min, x_max − x_j)`` (0 at, beyond or within float rounding of a bound:
    :func:`domain_slack`), ``ε_j = d_j / Q(p)`` with ``p`` from
    :func:`adaptive_quantile_level`. For the gaussian and ``one_sided`` this is Eq. 13,
    ``σ_j = d_j / (√2·erfinv((1 + c)/2))``.

    Args:
        x: float array (one instance or a batch), broadcastable with the bounds.
        lower, upper: domain bounds, ``lower < upper``.
        confidence: c in (0, 1).
        kernel: a kernel name or instance.
        rule: ``one_sided`` (Eq. 13) or ``two_sided`` (released code).

    Returns:
        float64 ``ε`` of the broadcast shape of ``x`` and the bounds; 0 where ``x`` sits on a bound.
    """
    xs = check_float_array(x, "x")
    lo, hi = check_bounds(lower, upper)
    try:
        shape = np.broadcast_shapes(xs.shape, lo.shape)
    except ValueError as err:
        raise InvalidArgumentError(
            f"x: expected a shape broadcastable with the bounds {lo.shape}; got {xs.shape}"
        ) from err
    q = float(_kernel(kernel).ppf(adaptive_quantile_level(confidence, rule)))
    return np.broadcast_to(_adaptive_scale(xs, lo, hi, q), shape).copy()


def _adaptive_scale(x: np.ndarray, lo: np.ndarray, hi: np.ndarray, quantile: float) -> np.ndarray:
    # Beyond a bound the paper's |·| would give noise again; a point outside Ω gets none, and neither
    # does a point within float rounding of a bound, on whichever side the rounding fell.
    distance = np.minimum(x - lo, hi - x)
    return np.where(distance > domain_slack(lo, hi), distance, 0.0) / quantile


def inherent_noise(
    x: ArrayLike,
    lower: ArrayLike,
    upper: ArrayLike,
    scale: ArrayLike,
    kernel: str | Kernel = "gaussian",
) -> np.ndarray:
    """Per-feature probability that ``x + u`` leaves ``[lower, upper]`` (Zhou et al. 2024, AdaptGrad,
    Eq. 9–10), any kernel.

    ``A_j = 1 − (CDF((x_max − x_j)/ε_j) − CDF((x_min − x_j)/ε_j))``; 0 where ``ε_j = 0`` and ``x_j`` is
    inside the domain (1 where it is outside). A point within float rounding of a bound
    (:func:`domain_slack`) counts as on it.

    Returns:
        float64 array of the broadcast shape of the arguments, values in [0, 1].
    """
    xs = check_float_array(x, "x")
    lo, hi = check_bounds(lower, upper)
    eps = check_float_array(scale, "scale")
    if np.any(eps < 0):
        raise InvalidArgumentError(f"scale: expected values >= 0; got minimum {float(eps.min())}")
    return _inherent_noise(xs, lo, hi, eps, _kernel(kernel))


def _inherent_noise(
    x: np.ndarray, lo: np.ndarray, hi: np.ndarray, eps: np.ndarray, kernel: Kernel
) -> np.ndarray:
    if np.all(eps > 0):
        mass = kernel.cdf((hi - x) / eps) - kernel.cdf((lo - x) / eps)
        outside: np.ndarray = np.clip(1.0 - mass, 0.0, 1.0)
        return outside
    x, lo, hi, eps = np.broadcast_arrays(x, lo, hi, eps)
    slack = domain_slack(lo, hi)
    inside = (x >= lo - slack) & (x <= hi + slack)
    positive = eps > 0
    safe = np.where(positive, eps, 1.0)
    mass = kernel.cdf((hi - x) / safe) - kernel.cdf((lo - x) / safe)
    noise = np.clip(1.0 - mass, 0.0, 1.0)
    return np.where(positive, noise, np.where(inside, 0.0, 1.0))


def truncated_offsets(
    uniforms: np.ndarray, center: np.ndarray, lo: np.ndarray, hi: np.ndarray, eps: np.ndarray, kernel: Kernel
) -> np.ndarray:
    """Offsets ``u`` from the kernel of scale ``ε`` restricted to ``[lo − center, hi − center]`` (docs/method.md §4.3).

    ``u = ε·Q(CDF(a/ε) + U·(CDF(b/ε) − CDF(a/ε)))`` with ``a = lo − center``, ``b = hi − center``; the result is
    clipped into ``[a, b]`` so float rounding of ``Q`` cannot leave the domain. ``ε = 0`` gives 0.
    All arguments broadcast together; float64 in and out.
    """
    positive = eps > 0
    safe = np.where(positive, eps, 1.0)
    a = lo - center
    b = hi - center
    fa = kernel.cdf(a / safe)
    fb = kernel.cdf(b / safe)
    p = fa + uniforms * (fb - fa)
    # p can reach 0 or 1 exactly when the interval lies in a far tail; clip to keep Q finite.
    p = np.clip(p, np.nextafter(0.0, 1.0), np.nextafter(1.0, 0.0))
    u = np.clip(safe * kernel.ppf(p), a, b)
    return np.where(positive, u, 0.0)
