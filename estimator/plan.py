"""Validate a :class:`~estimator.method.Method` and lay its work out as rows of gradient evaluations.

A *row* is one gradient evaluation; a *sample* is one value of the base method (1 row, or one row
per path point for integrated gradients); a *unit* is what the standard error treats as i.i.d.
(a sample, or for FusionGrad one weight draw with its inner input draws). Rows are numbered
``((unit · samples_per_unit) + inner) · rows_per_sample + step``. Imports numpy and scipy only.
"""

from __future__ import annotations

from typing import get_args

from ._checks import check_choice, check_float, check_int
from .bases import get_base_method
from .errors import InvalidArgumentError
from .method import ChannelReduction, Method, Target, Transform
from .moments import MAX_STATISTIC_CHANNELS
from .smoothing import Plan, get_smoothing
from .targets import needs_clean_outputs

# The names each Literal allows, computed once (typing.get_args is slow on every request).
_CHANNEL_REDUCTIONS = get_args(ChannelReduction)
_TRANSFORMS = get_args(Transform)

__all__ = ["Plan", "make_plan", "normalized_channel_axis", "planned_evaluations", "validate_method"]


def validate_method(method: Method, input_shape: tuple[int, ...] | None = None) -> None:
    """Check every field of ``method``; shape-dependent checks run when ``input_shape`` is given.

    The base method (:mod:`estimator.bases`) and the smoothing mode (:mod:`estimator.smoothing`)
    check the fields they use; the fields shared by all are checked here.

    Raises:
        InvalidArgumentError: the first invalid field, with the expected and the actual value.
    """
    if not isinstance(method, Method):
        raise InvalidArgumentError(f"method: expected an estimator.Method; got {type(method).__name__}")
    base = get_base_method(method.base)
    smoothing = get_smoothing(method.mode)
    check_choice(method.transform, "method.transform", _TRANSFORMS)
    check_choice(method.channel_reduction, "method.channel_reduction", _CHANNEL_REDUCTIONS)
    check_int(method.samples, "method.samples", minimum=1)
    smoothing.check(method, input_shape)
    base.check(method, input_shape)
    if (method.channel_axis is None) != (method.channel_reduction == "none"):
        raise InvalidArgumentError(
            "method.channel_axis: expected an axis exactly when channel_reduction is not 'none'; got "
            f"channel_axis={method.channel_axis!r} with channel_reduction={method.channel_reduction!r}"
        )
    if method.channel_axis is not None:
        check_int(method.channel_axis, "method.channel_axis")
        if input_shape is not None:
            axis = normalized_channel_axis(method, input_shape)
            assert axis is not None
            _check_statistic_channels(method, input_shape[axis])
    if method.tol is not None:
        check_float(method.tol, "method.tol", positive=True)
    if method.max_samples is not None:
        if method.tol is None:
            raise InvalidArgumentError(
                f"method.max_samples: expected only together with tol; got max_samples={method.max_samples} "
                "with tol=None"
            )
        check_int(method.max_samples, "method.max_samples", minimum=1)


def _check_statistic_channels(method: Method, channels: int) -> None:
    linear = method.channel_reduction in ("sum", "mean") and method.transform in ("none", "smoothgrad_sq")
    if not linear and channels > MAX_STATISTIC_CHANNELS:
        raise InvalidArgumentError(
            f"method.channel_axis: a {method.channel_reduction!r} reduction with transform {method.transform!r} "
            f"keeps statistics per channel, at most {MAX_STATISTIC_CHANNELS} channels; the axis has {channels} "
            "(reduce a shorter axis, or use channel_reduction 'sum' or 'mean' with transform 'none')"
        )


def normalized_channel_axis(method: Method, input_shape: tuple[int, ...]) -> int | None:
    """``method.channel_axis`` as a non-negative axis of one instance, or ``None``."""
    if method.channel_axis is None:
        return None
    ndim = len(input_shape)
    axis = int(method.channel_axis)
    if not -ndim <= axis < ndim:
        raise InvalidArgumentError(
            f"method.channel_axis: expected an axis in [{-ndim}, {ndim - 1}] of the instance shape "
            f"{tuple(input_shape)} (no batch axis); got {axis}"
        )
    return axis % ndim


def make_plan(method: Method) -> Plan:
    """Lay out ``method`` (assumed valid): its smoothing mode's units of its base method's samples."""
    return get_smoothing(method.mode).plan(method, get_base_method(method.base).rows_per_sample(method))


def reuses_clean_row(method: Method, target: Target | None) -> bool:
    """Whether the clean pass is the whole job (vanilla gradient or gradient × input with a known target)."""
    return (
        not get_smoothing(method.mode).stochastic
        and get_base_method(method.base).clean_row_is_answer
        and target is not None
        and not needs_clean_outputs(target)
    )


def planned_evaluations(method: Method, target: Target | None = None) -> int:
    """Gradient evaluations ``explain`` runs at most for ``method``, the clean pass included.

    With ``tol`` set this is the cap (``max_samples`` or ``samples`` draws). Vanilla gradient and
    gradient × input need 1 evaluation when the target is known in advance and 2 for
    :class:`~estimator.method.PredictedClassTarget` (forward pass first); ``target=None`` counts the
    latter. Adaptive stopping may finish a few evaluations past the stopping draw within its chunk;
    those are still bounded by this number.

    Raises:
        InvalidArgumentError: ``method`` is invalid.
    """
    validate_method(method)
    if reuses_clean_row(method, target):
        return 1
    return 1 + make_plan(method).rows
