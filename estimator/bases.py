"""Base methods: what one sample of the Monte Carlo mean is (docs/method.md §6).

A base method (an :class:`Attributor`) says how many gradient evaluations (*rows*) one sample
takes, at which points, and how their gradients become the sample's attribution:

- ``gradient``: ``G(x)``, the plain gradient (Simonyan et al. 2014, "Deep inside convolutional
  networks").
- ``gradient_x_input``: ``x ⊙ G(x)`` (Shrikumar et al. 2016, "Not just a black box").
- ``integrated_gradients``: ``(x − x0) ⊙ Σ_k w_k G(x0 + a_k (x − x0))`` (Sundararajan et al. 2017,
  "Axiomatic attribution for deep networks"), smoothed *inner* (noise at every path point, S-IG /
  A-IG of Zhou et al. 2024) or *outer* (IG of noisy inputs, Smilkov et al. 2017).

Smoothing wraps any base method, as Captum's NoiseTunnel wraps any attribution: the smoothing
(:mod:`estimator.smoothing`) decides where noise goes and how many samples there are, the base
method what one sample is. Adding a base method is one class (a :class:`PointwiseAttributor` when
one sample is one gradient at the noisy point) and one :func:`register_base_method` call. Imports
numpy and scipy only.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import ClassVar

import numpy as np

from ._checks import check_choice, check_float_array, check_int
from .errors import InvalidArgumentError
from .method import Method
from .paths import (
    BASELINE_NAMES,
    INTEGRATION_RULES,
    check_gauss_legendre_steps,
    integration_rule,
    path_points,
    resolve_baseline,
)

__all__ = [
    "Attributor",
    "GradientAttributor",
    "GradientXInputAttributor",
    "IntegratedGradientsAttributor",
    "PointwiseAttributor",
    "SampleRows",
    "base_method_names",
    "get_base_method",
    "register_base_method",
    "unregister_base_method",
]

_IG_SMOOTHINGS = ("inner", "outer")


class SampleRows(ABC):
    """The rows of one request's samples: built from the validated method, the instance and its domain.

    Row ``step`` of a sample is its ``step``-th gradient evaluation (``0 ≤ step < rows_per_sample``).
    Arrays are flat: ``D`` features, float64 unless said otherwise.
    """

    rows_per_sample: int = 1
    # Input noise is drawn afresh for every row of a sample (draw coordinate a = step), instead of
    # once per sample and shared by its rows.
    noise_per_row: bool = False
    # One sample's draw is asked for again by its later rows (they may fall into the next chunk).
    repeats_draws: bool = False
    # Distinct noise centers (the points input noise is added to): 1 means ``x`` itself.
    center_count: int = 1

    def centers(self, steps: np.ndarray, x_rows: np.ndarray) -> np.ndarray:
        """Noise centers of rows with these steps, ``(rows, D)``; ``x_rows`` is ``x`` once per row."""
        return x_rows

    def inputs(
        self, steps: np.ndarray, points: np.ndarray, x_rows: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """The model inputs of these rows and the end points of their samples, from ``points`` (the
        centers, noisy when input noise is used)."""
        return points, x_rows

    def batch_values(self, points: np.ndarray, gradients: np.ndarray) -> np.ndarray | None:
        """Every row's attribution at once, ``(rows, D)``, when each row is a whole sample; else ``None``."""
        return None

    @abstractmethod
    def row_value(
        self, step: int, point: np.ndarray, endpoint: np.ndarray, gradient: np.ndarray
    ) -> np.ndarray | None:
        """Fold one row, in row order: the sample's attribution ``(D,)`` once its last row is in, else ``None``.

        ``point`` is what the model saw, ``endpoint`` the sample's end point, ``gradient`` float64.
        """


class Attributor(ABC):
    """A base method: how many rows a sample takes and how their gradients become an attribution."""

    name: ClassVar[str]
    # The clean pass (one row at x with the known cotangent) is the whole unsmoothed answer.
    clean_row_is_answer: ClassVar[bool] = False

    def check(self, method: Method, input_shape: tuple[int, ...] | None) -> None:  # noqa: B027 - optional hook
        """Raise :class:`InvalidArgumentError` naming the field when ``method``'s own fields of this
        base method are invalid (shape-dependent checks when ``input_shape`` is given)."""

    def rows_per_sample(self, method: Method) -> int:
        """Gradient evaluations per sample."""
        return 1

    @abstractmethod
    def title(self, method: Method) -> str:
        """The base method's part of :func:`~estimator.describe.describe`, e.g. ``"Gradient"``."""

    def smoothing_note(self, method: Method) -> str:
        """Appended to the description when input noise is used (how the noise meets this method)."""
        return ""

    @abstractmethod
    def rows(self, method: Method, x: np.ndarray, lower: np.ndarray, upper: np.ndarray) -> SampleRows:
        """The rows of one request (``method`` valid; ``x``, ``lower``, ``upper`` of one instance's shape, float64)."""


class PointwiseAttributor(Attributor):
    """One row per sample, at the (noisy) input; the attribution is a function of that point and its gradient."""

    clean_row_is_answer = True

    @abstractmethod
    def attribution(self, points: np.ndarray, gradients: np.ndarray) -> np.ndarray:
        """Attributions of ``(rows, D)`` model inputs and their gradients (float32 or float64), ``(rows, D)``."""

    def rows(self, method: Method, x: np.ndarray, lower: np.ndarray, upper: np.ndarray) -> SampleRows:
        return _PointwiseRows(self)


class _PointwiseRows(SampleRows):
    def __init__(self, attributor: PointwiseAttributor) -> None:
        self.attributor = attributor

    def batch_values(self, points: np.ndarray, gradients: np.ndarray) -> np.ndarray:
        return self.attributor.attribution(points, gradients)

    def row_value(
        self, step: int, point: np.ndarray, endpoint: np.ndarray, gradient: np.ndarray
    ) -> np.ndarray:
        value: np.ndarray = self.attributor.attribution(point[None], gradient[None])[0]
        return value


class GradientAttributor(PointwiseAttributor):
    """``G(x)``."""

    name = "gradient"

    def title(self, method: Method) -> str:
        return "Gradient"

    def attribution(self, points: np.ndarray, gradients: np.ndarray) -> np.ndarray:
        return gradients


class GradientXInputAttributor(PointwiseAttributor):
    """``x ⊙ G(x)`` with ``x`` the point the model actually saw (float32)."""

    name = "gradient_x_input"

    def title(self, method: Method) -> str:
        return "Gradient×Input"

    def attribution(self, points: np.ndarray, gradients: np.ndarray) -> np.ndarray:
        products: np.ndarray = points.astype(np.float32).astype(np.float64) * gradients
        return products


class IntegratedGradientsAttributor(Attributor):
    """``(x − x0) ⊙ Σ_k w_k G(x0 + a_k (x − x0))`` over ``ig_steps`` path points of ``ig_rule``."""

    name = "integrated_gradients"

    def check(self, method: Method, input_shape: tuple[int, ...] | None) -> None:
        rule = check_choice(method.ig_rule, "method.ig_rule", INTEGRATION_RULES)
        steps = check_int(method.ig_steps, "method.ig_steps", minimum=2 if rule == "riemann_trapezoid" else 1)
        if rule == "gauss_legendre":
            check_gauss_legendre_steps(steps)
        check_choice(method.ig_smoothing, "method.ig_smoothing", _IG_SMOOTHINGS)
        if isinstance(method.ig_baseline, str):
            check_choice(method.ig_baseline, "method.ig_baseline", BASELINE_NAMES)
        else:
            check_float_array(method.ig_baseline, "method.ig_baseline", input_shape)

    def rows_per_sample(self, method: Method) -> int:
        return int(method.ig_steps)

    def title(self, method: Method) -> str:
        baseline = method.ig_baseline if isinstance(method.ig_baseline, str) else "array"
        return f"IG({method.ig_rule}, {method.ig_steps}, baseline={baseline})"

    def smoothing_note(self, method: Method) -> str:
        return f" [{method.ig_smoothing}]"

    def rows(self, method: Method, x: np.ndarray, lower: np.ndarray, upper: np.ndarray) -> SampleRows:
        step_sizes, alphas = integration_rule(method.ig_rule, method.ig_steps)
        baseline = resolve_baseline(method.ig_baseline, x.shape, lower, upper).reshape(-1)
        path = _InnerPath if method.ig_smoothing == "inner" else _OuterPath
        return path(x.reshape(-1), baseline, step_sizes, alphas)


class _PathRows(SampleRows):
    """The rows of integrated gradients: one per path point, summed with the rule's step sizes."""

    def __init__(
        self, x: np.ndarray, baseline: np.ndarray, step_sizes: np.ndarray, alphas: np.ndarray
    ) -> None:
        self.x, self.baseline, self.step_sizes, self.alphas = x, baseline, step_sizes, alphas
        self.rows_per_sample = int(alphas.size)
        self._partial: np.ndarray | None = None  # running Σ_k w_k G_k of the open sample

    def path(self, steps: np.ndarray) -> np.ndarray:
        """Path points ``x0 + a_k (x − x0)`` of these steps, ``(len(steps), D)``, built per chunk."""
        return path_points(self.x, self.baseline, self.alphas[steps])

    def row_value(
        self, step: int, point: np.ndarray, endpoint: np.ndarray, gradient: np.ndarray
    ) -> np.ndarray | None:
        if step == 0:
            self._partial = self.step_sizes[0] * gradient
        else:
            assert self._partial is not None
            self._partial += self.step_sizes[step] * gradient
        if step < self.rows_per_sample - 1:
            return None
        value: np.ndarray = (endpoint - self.baseline) * self._partial
        return value


class _InnerPath(_PathRows):
    """Inner smoothing: the noise is centred on each path point, drawn afresh for each."""

    noise_per_row = True

    def __init__(
        self, x: np.ndarray, baseline: np.ndarray, step_sizes: np.ndarray, alphas: np.ndarray
    ) -> None:
        super().__init__(x, baseline, step_sizes, alphas)
        self.center_count = int(alphas.size)

    def centers(self, steps: np.ndarray, x_rows: np.ndarray) -> np.ndarray:
        return self.path(steps)


class _OuterPath(_PathRows):
    """Outer smoothing: one noisy end point per sample, and the path from the baseline to it."""

    repeats_draws = True

    def inputs(
        self, steps: np.ndarray, points: np.ndarray, x_rows: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        return self.baseline + self.alphas[steps][:, None] * (points - self.baseline), points


_REGISTRY: dict[str, Attributor] = {
    attributor.name: attributor
    for attributor in (GradientAttributor(), GradientXInputAttributor(), IntegratedGradientsAttributor())
}
_BUILT_IN = frozenset(_REGISTRY)


def base_method_names() -> tuple[str, ...]:
    """The registered base methods' names, built-ins first."""
    return tuple(_REGISTRY)


def get_base_method(name: str, field: str = "method.base") -> Attributor:
    """The base method called ``name``; :class:`InvalidArgumentError` naming ``field`` otherwise."""
    attributor = _REGISTRY.get(name) if isinstance(name, str) else None
    if attributor is None:
        raise InvalidArgumentError(f"{field}: expected one of {', '.join(_REGISTRY)}; got {name!r}")
    return attributor


def register_base_method(attributor: Attributor) -> Attributor:
    """Make ``attributor`` available as ``Method(base=attributor.name)``; returns it.

    Raises:
        ValueError: the name is taken.
    """
    if attributor.name in _REGISTRY:
        raise ValueError(f"a base method named {attributor.name!r} is already registered")
    _REGISTRY[attributor.name] = attributor
    return attributor


def unregister_base_method(name: str) -> None:
    """Remove a base method added by :func:`register_base_method` (built-ins stay)."""
    if name in _BUILT_IN:
        raise ValueError(f"{name!r} is a built-in base method")
    _REGISTRY.pop(name, None)
