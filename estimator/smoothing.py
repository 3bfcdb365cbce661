"""Smoothing modes: where the noise goes and how samples group into units (docs/method.md §2).

A smoothing mode (a :class:`Smoothing`) wraps any base method (:mod:`estimator.bases`), as PAIR
saliency's smoothing wraps any mask function:

- ``none``: the plain base method, one sample, zero standard error.
- ``input``: noise on the input, one unit per sampler unit (SmoothGrad, Smilkov et al. 2017;
  AdaptGrad, Zhou et al. 2024; any kernel and scale policy).
- ``parameter``: multiplicative noise on the weights, one unit per weight draw (NoiseGrad, Bykov et
  al. 2022, "NoiseGrad: enhancing explanations by introducing stochasticity to model weights").
- ``fusion``: both; a unit is one weight draw with its ``samples`` input draws (FusionGrad, ibid.).

Adding a mode is one class and one entry in ``_REGISTRY``. Imports numpy and scipy only.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from ._checks import check_choice, check_float, check_float_array, check_int
from .errors import InvalidArgumentError
from .kernels import get_kernel
from .method import Method
from .samplers import get_sampler

__all__ = [
    "FusionSmoothing",
    "InputSmoothing",
    "NoSmoothing",
    "ParameterSmoothing",
    "Plan",
    "Smoothing",
    "get_smoothing",
    "smoothing_names",
]

_SCALE_POLICIES = ("fixed", "adaptive", "truncated")
_ADAPTIVE_RULES = ("one_sided", "two_sided")


@dataclass(frozen=True)
class Plan:
    """The work of one explanation, before any model call.

    A *row* is one gradient evaluation; a *sample* is one value of the base method (its rows); a
    *unit* is what the standard error treats as i.i.d. Rows are numbered
    ``((unit · samples_per_unit) + inner) · rows_per_sample + step``.

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


class Smoothing(ABC):
    """A smoothing mode: which noise is drawn, the units it forms, and its part of the description."""

    name: ClassVar[str]
    input_noise: ClassVar[bool] = False
    weight_noise: ClassVar[bool] = False

    @property
    def stochastic(self) -> bool:
        """Whether any noise is drawn (else the result is exact and its standard error 0)."""
        return self.input_noise or self.weight_noise

    def check(self, method: Method, input_shape: tuple[int, ...] | None) -> None:
        """Raise :class:`InvalidArgumentError` naming the first invalid field this mode uses."""
        if self.input_noise:
            _check_input_noise(method, input_shape)
        _check_sampler(method, self, input_shape)
        if self.weight_noise:
            _check_weight_noise(method)

    @abstractmethod
    def plan(self, method: Method, rows_per_sample: int) -> Plan:
        """Lay out a valid ``method`` whose samples take ``rows_per_sample`` rows each."""

    @abstractmethod
    def describe(self, method: Method, base: str) -> str:
        """The description of this mode around the base method's title ``base``."""


class NoSmoothing(Smoothing):
    name = "none"

    def plan(self, method: Method, rows_per_sample: int) -> Plan:
        return Plan(rows_per_sample, 1, 1, False, False)

    def describe(self, method: Method, base: str) -> str:
        return base


class InputSmoothing(Smoothing):
    name = "input"
    input_noise = True

    def check(self, method: Method, input_shape: tuple[int, ...] | None) -> None:
        super().check(method, input_shape)
        sampler = get_sampler(method.sampler)
        if sampler.name != "iid" and method.tol is not None and method.max_samples is not None:
            unit = sampler.unit_draws(int(method.samples), int(method.replicates))
            if int(method.max_samples) % unit:
                raise InvalidArgumentError(
                    f"method.max_samples: the {sampler.name} sampler draws units of {unit}; expected a multiple "
                    f"of {unit}; got {method.max_samples}"
                )

    def plan(self, method: Method, rows_per_sample: int) -> Plan:
        draws = int(method.max_samples or method.samples) if method.tol is not None else int(method.samples)
        per_unit = get_sampler(method.sampler).unit_draws(int(method.samples), int(method.replicates))
        return Plan(rows_per_sample, per_unit, draws // per_unit, True, False)

    def describe(self, method: Method, base: str) -> str:
        return f"{_input_noise_text(method)}) × {base}"


class ParameterSmoothing(Smoothing):
    name = "parameter"
    weight_noise = True

    def plan(self, method: Method, rows_per_sample: int) -> Plan:
        return Plan(rows_per_sample, 1, int(method.weight_draws), False, True)

    def describe(self, method: Method, base: str) -> str:
        return f"NoiseGrad(σ_w={method.weight_sigma:g}, M={method.weight_draws}) × {base}"


class FusionSmoothing(Smoothing):
    name = "fusion"
    input_noise = True
    weight_noise = True

    def plan(self, method: Method, rows_per_sample: int) -> Plan:
        return Plan(rows_per_sample, int(method.samples), int(method.weight_draws), True, True)

    def describe(self, method: Method, base: str) -> str:
        return (
            f"FusionGrad(σ_w={method.weight_sigma:g}, M={method.weight_draws}; "
            f"{_input_noise_text(method)})) × {base}"
        )


def _input_noise_text(method: Method) -> str:
    """The input-noise method without its closing parenthesis, e.g. ``"SmoothGrad(α=0.2, N=50"``."""
    level = "σ=given" if method.sigma is not None else f"α={method.alpha:g}"
    if method.scale == "adaptive":
        rule = "" if method.adaptive_rule == "one_sided" else ", two_sided"
        text = f"AdaptGrad({method.kernel}, c={method.confidence:g}{rule}"
    elif method.scale == "truncated":
        text = f"TruncatedGrad({method.kernel}, {level}"
    elif method.kernel == "gaussian":
        text = f"SmoothGrad({level}"
    else:
        text = f"MCGM({method.kernel}, {level}"
    count = f", N={method.samples}" if method.tol is None else f", tol={method.tol:g}"
    if method.sampler != "iid":
        sampler = get_sampler(method.sampler)
        count += f", {sampler.name}" + (f"×{method.replicates}" if sampler.structured else "")
    return text + count


def _check_input_noise(method: Method, input_shape: tuple[int, ...] | None) -> None:
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


def _check_sampler(method: Method, smoothing: Smoothing, input_shape: tuple[int, ...] | None) -> None:
    sampler = get_sampler(method.sampler)
    if sampler.name == "iid":
        return
    if not smoothing.input_noise:
        raise InvalidArgumentError(
            f"method.sampler: {sampler.name!r} lays out input noise, and mode {method.mode!r} draws none "
            "(use sampler 'iid')"
        )
    replicates = check_int(method.replicates, "method.replicates", minimum=1)
    features = None if input_shape is None else math.prod(input_shape)
    sampler.check(int(method.samples), replicates, features)


def _check_weight_noise(method: Method) -> None:
    check_int(method.weight_draws, "method.weight_draws", minimum=1)
    check_float(method.weight_sigma, "method.weight_sigma", non_negative=True)
    if not isinstance(method.weight_exclude, tuple | list) or not all(
        isinstance(p, str) for p in method.weight_exclude
    ):
        raise InvalidArgumentError(
            f"method.weight_exclude: expected a tuple of glob patterns; got {method.weight_exclude!r}"
        )


_REGISTRY: dict[str, Smoothing] = {
    smoothing.name: smoothing
    for smoothing in (NoSmoothing(), InputSmoothing(), ParameterSmoothing(), FusionSmoothing())
}


def smoothing_names() -> tuple[str, ...]:
    """The registered smoothing modes' names."""
    return tuple(_REGISTRY)


def get_smoothing(name: str, field: str = "method.mode") -> Smoothing:
    """The smoothing mode called ``name``; :class:`InvalidArgumentError` naming ``field`` otherwise."""
    smoothing = _REGISTRY.get(name) if isinstance(name, str) else None
    if smoothing is None:
        raise InvalidArgumentError(f"{field}: expected one of {', '.join(_REGISTRY)}; got {name!r}")
    return smoothing
