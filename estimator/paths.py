"""Integrated-gradients quadrature and baselines (Sundararajan et al. 2017; docs/method.md §6.3).

Step sizes ``w_k`` and path fractions ``a_k`` follow Captum's
``captum/attr/_utils/approximation_methods.py``: the same Riemann deltas and linspace end points, and
Gauss–Legendre as numpy's ``leggauss`` mapped from ``[-1, 1]`` to ``[0, 1]`` (bit-identical up to
256 nodes; scipy's ``roots_legendre`` above, within 1e-13). Captum
builds the Riemann alphas with a float32 ``torch.linspace`` whose rounding depends on the CPU's vector
width; here they are exact float64 values, at most one float32 ulp (6e-8) away. Imports numpy and scipy only.
"""

from __future__ import annotations

import numpy as np
from scipy import special

from ._checks import check_choice, check_float_array, check_int
from .errors import InvalidArgumentError

__all__ = [
    "BASELINE_NAMES",
    "INTEGRATION_RULES",
    "MAX_GAUSS_LEGENDRE_STEPS",
    "check_gauss_legendre_steps",
    "integration_rule",
    "path_points",
    "resolve_baseline",
]

INTEGRATION_RULES: tuple[str, ...] = (
    "riemann_left",
    "riemann_right",
    "riemann_middle",
    "riemann_trapezoid",
    "gauss_legendre",
)
BASELINE_NAMES: tuple[str, ...] = ("zero", "black", "white")
# Gauss–Legendre nodes cost O(n²) time to compute (numpy solves an n × n eigenproblem, scipy iterates
# on the three-term recurrence); 1024 nodes integrate polynomials of degree 2047 exactly, far beyond
# what a path integral of a network needs. Finer paths use the O(n) Riemann rules.
MAX_GAUSS_LEGENDRE_STEPS = 1024
# Up to this many nodes numpy's leggauss, as Captum computes them (bit-identical); scipy above.
_NUMPY_GAUSS_LEGENDRE_STEPS = 256


def integration_rule(rule: str, steps: int) -> tuple[np.ndarray, np.ndarray]:
    """Step sizes and path fractions of a quadrature rule on ``[0, 1]``.

    Args:
        rule: ``riemann_left``, ``riemann_right``, ``riemann_middle``, ``riemann_trapezoid`` or
            ``gauss_legendre`` (Captum's ``gausslegendre``).
        steps: number of path points, ≥ 1 (≥ 2 for ``riemann_trapezoid``).

    Returns:
        ``(step_sizes, alphas)``: two float64 arrays of length ``steps``.

    Raises:
        InvalidArgumentError: an unknown rule, too few steps, or more than
            :data:`MAX_GAUSS_LEGENDRE_STEPS` for ``gauss_legendre``.
    """
    check_choice(rule, "ig_rule", INTEGRATION_RULES)
    n = check_int(steps, "ig_steps", minimum=2 if rule == "riemann_trapezoid" else 1)
    if rule == "gauss_legendre":
        check_gauss_legendre_steps(n)
        if n <= _NUMPY_GAUSS_LEGENDRE_STEPS:
            nodes, weights = np.polynomial.legendre.leggauss(n)
        else:
            nodes, weights = special.roots_legendre(n)
        return 0.5 * weights, 0.5 * (1.0 + nodes)
    deltas = np.full(n, 1.0 / n)
    if rule == "riemann_trapezoid":
        deltas[0] /= 2.0
        deltas[-1] /= 2.0
        return deltas, np.linspace(0.0, 1.0, n)
    if rule == "riemann_left":
        return deltas, np.linspace(0.0, 1.0 - 1.0 / n, n)
    if rule == "riemann_middle":
        return deltas, np.linspace(1.0 / (2 * n), 1.0 - 1.0 / (2 * n), n)
    return deltas, np.linspace(1.0 / n, 1.0, n)


def check_gauss_legendre_steps(steps: int) -> None:
    """Refuse more Gauss–Legendre nodes than :data:`MAX_GAUSS_LEGENDRE_STEPS`, before any work."""
    if steps > MAX_GAUSS_LEGENDRE_STEPS:
        raise InvalidArgumentError(
            f"ig_steps: the gauss_legendre rule takes at most {MAX_GAUSS_LEGENDRE_STEPS} path points; got "
            f"{steps} (use a riemann_* rule, e.g. riemann_trapezoid, for finer paths)"
        )


def path_points(x: np.ndarray, baseline: np.ndarray, alphas: np.ndarray) -> np.ndarray:
    """Points ``x0 + a_k (x − x0)`` of the straight path for the fractions ``alphas`` (``(K,)``).

    ``x`` and ``baseline`` are ``(D,)``; returns ``(K, D)`` float64. Computed per chunk of path
    steps, never for the whole path at once (steps × features can exceed any memory budget).
    """
    points: np.ndarray = baseline + alphas[:, None] * (x - baseline)[None, :]
    return points


def resolve_baseline(
    baseline: str | np.ndarray, input_shape: tuple[int, ...], lower: np.ndarray, upper: np.ndarray
) -> np.ndarray:
    """The IG baseline ``x0`` as a float64 array of ``input_shape``.

    ``zero`` → 0, ``black`` → ``lower``, ``white`` → ``upper`` (IG(B) / IG(W) of Zhou et al. 2024,
    AdaptGrad), or an array broadcastable to ``input_shape``.
    """
    if isinstance(baseline, str):
        check_choice(baseline, "ig_baseline", BASELINE_NAMES)
        if baseline == "zero":
            return np.zeros(input_shape, dtype=np.float64)
        bound = lower if baseline == "black" else upper
        return np.array(np.broadcast_to(bound, input_shape), dtype=np.float64)
    if not isinstance(baseline, np.ndarray):
        raise InvalidArgumentError(
            f"ig_baseline: expected one of {', '.join(BASELINE_NAMES)} or an array; got {type(baseline).__name__}"
        )
    values = check_float_array(baseline, "ig_baseline", input_shape)
    return np.array(np.broadcast_to(values, input_shape), dtype=np.float64)
