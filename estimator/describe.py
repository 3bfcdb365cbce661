"""Short human-readable names of methods, in the papers' vocabulary (Zhou et al. 2024, AdaptGrad, Table 2 style).

The base method (:mod:`estimator.bases`) names itself and the smoothing mode
(:mod:`estimator.smoothing`) wraps that name; the output transform and channel reduction follow.
"""

from __future__ import annotations

from .bases import get_base_method
from .method import Method
from .plan import validate_method
from .smoothing import get_smoothing

__all__ = ["describe", "describe_valid"]


def describe(method: Method) -> str:
    """A short name, e.g. ``"AdaptGrad(gaussian, c=0.95) × IG(gauss_legendre, 50, baseline=black)"``.

    Raises:
        InvalidArgumentError: ``method`` is invalid.
    """
    validate_method(method)
    return describe_valid(method)


def describe_valid(method: Method) -> str:
    """:func:`describe` of a method already validated (no second validation)."""
    base = get_base_method(method.base)
    smoothing = get_smoothing(method.mode)
    text = smoothing.describe(method, base.title(method))
    if smoothing.input_noise:
        text += base.smoothing_note(method)
    if method.transform != "none":
        text += f", {method.transform}"
    if method.channel_reduction != "none":
        text += f", {method.channel_reduction} over axis {method.channel_axis}"
    return text
