"""Short human-readable names of methods, in the papers' vocabulary (Zhou et al. 2024, AdaptGrad, Table 2 style).

Imports nothing beyond the estimator's own vocabulary.
"""

from __future__ import annotations

from .method import Method
from .plan import validate_method

__all__ = ["describe", "describe_valid"]


def _base(method: Method) -> str:
    if method.base == "gradient":
        return "Gradient"
    if method.base == "gradient_x_input":
        return "Gradient×Input"
    baseline = method.ig_baseline if isinstance(method.ig_baseline, str) else "array"
    return f"IG({method.ig_rule}, {method.ig_steps}, baseline={baseline})"


def _input_noise(method: Method) -> str:
    level = "σ=given" if method.sigma is not None else f"α={method.alpha:g}"
    if method.scale == "adaptive":
        rule = "" if method.adaptive_rule == "one_sided" else ", two_sided"
        return f"AdaptGrad({method.kernel}, c={method.confidence:g}{rule})"
    if method.scale == "truncated":
        return f"TruncatedGrad({method.kernel}, {level})"
    if method.kernel == "gaussian":
        return f"SmoothGrad({level})"
    return f"MCGM({method.kernel}, {level})"


def describe(method: Method) -> str:
    """A short name, e.g. ``"AdaptGrad(gaussian, c=0.95) × IG(gauss_legendre, 50, baseline=black)"``.

    Raises:
        InvalidArgumentError: ``method`` is invalid.
    """
    validate_method(method)
    return describe_valid(method)


def describe_valid(method: Method) -> str:
    """:func:`describe` of a method already validated (no second validation)."""
    base = _base(method)
    count = f", N={method.samples}" if method.tol is None else f", tol={method.tol:g}"
    if method.sampler != "iid" and method.mode in ("input", "fusion"):
        structured = method.sampler in ("latin_hypercube", "sobol")
        count += f", {method.sampler}" + (f"×{method.replicates}" if structured else "")
    if method.mode == "none":
        text = base
    elif method.mode == "input":
        text = f"{_input_noise(method)[:-1]}{count}) × {base}"
    elif method.mode == "parameter":
        text = f"NoiseGrad(σ_w={method.weight_sigma:g}, M={method.weight_draws}) × {base}"
    else:
        text = (
            f"FusionGrad(σ_w={method.weight_sigma:g}, M={method.weight_draws}; "
            f"{_input_noise(method)[:-1]}{count})) × {base}"
        )
    if method.base == "integrated_gradients" and method.mode in ("input", "fusion"):
        text += f" [{method.ig_smoothing}]"
    if method.transform != "none":
        text += f", {method.transform}"
    if method.channel_reduction != "none":
        text += f", {method.channel_reduction} over axis {method.channel_axis}"
    return text
