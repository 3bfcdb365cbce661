"""Validate a :class:`~estimator.method.Method` and lay its work out as rows of gradient evaluations.

A *row* is one gradient evaluation; a *sample* is one value of the base method (1 row, or one row
per path point for integrated gradients); a *unit* is what the standard error treats as i.i.d.
(a sample, or for FusionGrad one weight draw with its inner input draws). Rows are numbered
``((unit · samples_per_unit) + inner) · rows_per_sample + step``. Imports numpy only.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import get_args

import numpy as np

from ._checks import check_choice, check_float, check_float_array, check_int
from .errors import InvalidArgumentError
from .kernels import get_kernel
from .method import (
    AdaptiveRule,
    BaseMethod,
    ChannelReduction,
    IGSmoothing,
    IntegrationRule,
    Method,
    ScalePolicyName,
    SmoothingMode,
    Target,
    Transform,
)
from .moments import MAX_STATISTIC_CHANNELS
from .paths import BASELINE_NAMES, check_gauss_legendre_steps
from .samplers import get_sampler
from .targets import needs_clean_outputs

# The names each Literal allows, computed once (typing.get_args is slow on every request).
_ADAPTIVE_RULES = get_args(AdaptiveRule)
_BASE_METHODS = get_args(BaseMethod)
_CHANNEL_REDUCTIONS = get_args(ChannelReduction)
_IG_SMOOTHINGS = get_args(IGSmoothing)
_INTEGRATION_RULES = get_args(IntegrationRule)
_SCALE_POLICIES = get_args(ScalePolicyName)
_SMOOTHING_MODES = get_args(SmoothingMode)
_TRANSFORMS = get_args(Transform)

__all__ = ["Plan", "make_plan", "normalized_channel_axis", "planned_evaluations", "validate_method"]


def validate_method(method: Method, input_shape: tuple[int, ...] | None = None) -> None:
    """Check every field of ``method``; shape-dependent checks run when ``input_shape`` is given.

    Raises:
        InvalidArgumentError: the first invalid field, with the expected and the actual value.
    """
    if not isinstance(method, Method):
        raise InvalidArgumentError(f"method: expected an estimator.Method; got {type(method).__name__}")
    check_choice(method.base, "method.base", _BASE_METHODS)
    check_choice(method.mode, "method.mode", _SMOOTHING_MODES)
    check_choice(method.transform, "method.transform", _TRANSFORMS)
    check_choice(method.channel_reduction, "method.channel_reduction", _CHANNEL_REDUCTIONS)
    check_int(method.samples, "method.samples", minimum=1)
    if method.mode in ("input", "fusion"):
        get_kernel(method.kernel, "method.kernel")
        check_choice(method.scale, "method.scale", _SCALE_POLICIES)
        check_choice(method.adaptive_rule, "method.adaptive_rule", _ADAPTIVE_RULES)
        check_float(method.confidence, "method.confidence", open_unit=True)
        check_float(method.alpha, "method.alpha", positive=True)
        if method.sigma is not None:
            sigma = check_float_array(method.sigma, "method.sigma", input_shape)
            if np.any(sigma < 0):
                raise InvalidArgumentError(
                    f"method.sigma: expected values >= 0; got minimum {float(sigma.min())}"
                )
    _check_sampler(method, input_shape)
    if method.mode in ("parameter", "fusion"):
        check_int(method.weight_draws, "method.weight_draws", minimum=1)
        check_float(method.weight_sigma, "method.weight_sigma", non_negative=True)
        if not isinstance(method.weight_exclude, tuple | list) or not all(
            isinstance(p, str) for p in method.weight_exclude
        ):
            raise InvalidArgumentError(
                f"method.weight_exclude: expected a tuple of glob patterns; got {method.weight_exclude!r}"
            )
    if method.base == "integrated_gradients":
        rule = check_choice(method.ig_rule, "method.ig_rule", _INTEGRATION_RULES)
        steps = check_int(method.ig_steps, "method.ig_steps", minimum=2 if rule == "riemann_trapezoid" else 1)
        if rule == "gauss_legendre":
            check_gauss_legendre_steps(steps)
        check_choice(method.ig_smoothing, "method.ig_smoothing", _IG_SMOOTHINGS)
        if isinstance(method.ig_baseline, str):
            check_choice(method.ig_baseline, "method.ig_baseline", BASELINE_NAMES)
        else:
            check_float_array(method.ig_baseline, "method.ig_baseline", input_shape)
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


def _check_sampler(method: Method, input_shape: tuple[int, ...] | None) -> None:
    sampler = get_sampler(method.sampler)
    if sampler.name == "iid":
        return
    if method.mode not in ("input", "fusion"):
        raise InvalidArgumentError(
            f"method.sampler: {sampler.name!r} lays out input noise, and mode {method.mode!r} draws none "
            "(use sampler 'iid')"
        )
    replicates = check_int(method.replicates, "method.replicates", minimum=1)
    features = None if input_shape is None else math.prod(input_shape)
    sampler.check(int(method.samples), replicates, features)
    if method.mode == "input" and method.tol is not None and method.max_samples is not None:
        unit = sampler.unit_draws(int(method.samples), replicates)
        if int(method.max_samples) % unit:
            raise InvalidArgumentError(
                f"method.max_samples: the {sampler.name} sampler draws units of {unit}; expected a multiple of "
                f"{unit}; got {method.max_samples}"
            )


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


@dataclass(frozen=True)
class Plan:
    """The work of one explanation, before any model call.

    Attributes:
        rows_per_sample: gradient evaluations per sample (1, or ``ig_steps``).
        samples_per_unit: input draws per unit (``samples`` for fusion; the sampler's unit in input
            mode: 1 for i.i.d. draws, 2 for antithetic pairs, a point set for quasi-Monte Carlo).
        units: units at most (the cap when ``tol`` is set).
        input_noise: whether inputs are perturbed.
        weight_noise: whether weights are perturbed (rows of one unit share one weight draw).
    """

    rows_per_sample: int
    samples_per_unit: int
    units: int
    input_noise: bool
    weight_noise: bool

    @property
    def rows_per_unit(self) -> int:
        return self.rows_per_sample * self.samples_per_unit

    @property
    def rows(self) -> int:
        return self.units * self.rows_per_unit

    @property
    def samples(self) -> int:
        return self.units * self.samples_per_unit


def make_plan(method: Method) -> Plan:
    """Lay out ``method`` (assumed valid)."""
    rows_per_sample = int(method.ig_steps) if method.base == "integrated_gradients" else 1
    draws = int(method.max_samples or method.samples) if method.tol is not None else int(method.samples)
    if method.mode == "none":
        return Plan(rows_per_sample, 1, 1, False, False)
    if method.mode == "input":
        per_unit = get_sampler(method.sampler).unit_draws(int(method.samples), int(method.replicates))
        return Plan(rows_per_sample, per_unit, draws // per_unit, True, False)
    if method.mode == "parameter":
        return Plan(rows_per_sample, 1, int(method.weight_draws), False, True)
    return Plan(rows_per_sample, int(method.samples), int(method.weight_draws), True, True)


def reuses_clean_row(method: Method, target: Target | None) -> bool:
    """Whether the clean pass is the whole job (vanilla gradient or gradient × input with a known target)."""
    return (
        method.mode == "none"
        and method.base != "integrated_gradients"
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
