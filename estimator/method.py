"""What to compute: the method description, the explained target, and the result object.

These frozen dataclasses are the estimator's public vocabulary; the service translates
protobuf messages into them and back. Defaults follow the papers (docs/method.md).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

# The built-in base methods (estimator.bases) and smoothing modes (estimator.smoothing); the registries
# are what is checked at run time, and a test keeps these names, the proto and the CLI in step with them.
BaseMethod = Literal["gradient", "gradient_x_input", "integrated_gradients"]
SmoothingMode = Literal["none", "input", "parameter", "fusion"]
ScalePolicyName = Literal["fixed", "adaptive", "truncated"]
AdaptiveRule = Literal["one_sided", "two_sided"]
IntegrationRule = Literal[
    "riemann_left", "riemann_right", "riemann_middle", "riemann_trapezoid", "gauss_legendre"
]
BaselineName = Literal["zero", "black", "white"]
IGSmoothing = Literal["inner", "outer"]
Transform = Literal["none", "abs", "smoothgrad_sq", "vargrad"]
ChannelReduction = Literal["none", "sum", "mean", "max_abs"]
SamplerName = Literal["iid", "antithetic", "latin_hypercube", "sobol"]


@dataclass(frozen=True)
class Method:
    """A complete description of one explanation method.

    Attributes:
        base: what is averaged: the gradient G(x), x ⊙ G(x), or integrated gradients.
        mode: where noise goes: nowhere (vanilla), the input (SmoothGrad / AdaptGrad / any kernel),
            the weights (NoiseGrad), or both (FusionGrad).
        kernel: input-noise kernel name (``gaussian``, ``poisson``, ``hyperbolic``, ``sigmoid``, ``rect``).
        scale: input-noise scale policy: ``fixed`` (ε = α·(upper − lower) or ``sigma``),
            ``adaptive`` (AdaptGrad: ε_j = d_j / Q(p)), ``truncated`` (fixed ε, samples kept inside the domain).
        alpha: fixed / truncated policies: noise level as a fraction of the input range (SmoothGrad's 0.2).
        sigma: fixed / truncated policies: explicit scale in input units, a scalar or a per-feature
            array broadcastable to one instance; overrides ``alpha`` when given.
        confidence: adaptive policy: the confidence level c (AdaptGrad's 0.95).
        adaptive_rule: ``one_sided`` is Eq. 13 of Zhou et al. 2024, AdaptGrad, p = (3 + c)/4;
            ``two_sided`` is the authors' released code, p = (1 + c)/2.
        samples: N, input-noise draws (input and fusion modes); the cap when ``tol`` is set
            unless ``max_samples`` is given.
        weight_draws: M, weight-noise draws (parameter and fusion modes).
        weight_sigma: σ_w, weights are multiplied by ``1 + σ_w z``, z ~ N(0, 1).
        weight_exclude: glob patterns (fnmatch) of weight names left clean.
        ig_steps: integrated gradients: number of path points.
        ig_rule: integrated gradients: quadrature rule, named as Captum names them.
        ig_baseline: ``zero``, ``black`` (= lower bound), ``white`` (= upper bound), or an array of one
            instance's shape.
        ig_smoothing: ``inner`` smooths the gradient at each path point with the policy evaluated at
            that point (S-IG / A-IG of Zhou et al. 2024); ``outer`` averages IG over noisy inputs (Smilkov et al. 2017).
        transform: ``none`` (signed mean), ``abs`` (|mean|), ``smoothgrad_sq`` (mean of squares),
            ``vargrad`` (variance across samples).
        channel_axis: axis of one instance (no batch axis) to reduce over, or ``None``.
        channel_reduction: how to reduce ``channel_axis``: ``sum``, ``mean``, ``max_abs``.
        tol: stop drawing once ``‖SE‖₂ / ‖mean‖₂ ≤ tol``; ``None`` draws exactly ``samples``.
        max_samples: cap on input draws when ``tol`` is set (defaults to ``samples``).
        sampler: how input draws are laid out (:mod:`estimator.samplers`): ``iid``, ``antithetic``
            (pairs u, −u), ``latin_hypercube`` or ``sobol`` (randomised point sets).
        replicates: ``latin_hypercube`` and ``sobol``: independent point sets the draws are split
            into (the units of the standard error); ``samples`` must be a multiple of it.
    """

    base: BaseMethod = "gradient"
    mode: SmoothingMode = "input"
    kernel: str = "gaussian"
    scale: ScalePolicyName = "fixed"
    alpha: float = 0.2
    sigma: float | np.ndarray | None = None
    confidence: float = 0.95
    adaptive_rule: AdaptiveRule = "one_sided"
    samples: int = 50
    weight_draws: int = 10
    weight_sigma: float = 0.2
    weight_exclude: tuple[str, ...] = ()
    ig_steps: int = 50
    ig_rule: IntegrationRule = "gauss_legendre"
    ig_baseline: BaselineName | np.ndarray = "zero"
    ig_smoothing: IGSmoothing = "inner"
    transform: Transform = "none"
    channel_axis: int | None = None
    channel_reduction: ChannelReduction = "none"
    tol: float | None = None
    max_samples: int | None = None
    sampler: SamplerName = "iid"
    replicates: int = 10


@dataclass(frozen=True)
class ClassTarget:
    """Explain the class ``index`` along the last axis of the explained tensor."""

    index: int


@dataclass(frozen=True)
class PredictedClassTarget:
    """Explain the arg-max class of the explained tensor at the clean input."""


@dataclass(frozen=True)
class CotangentTarget:
    """Explain ``<cotangent, y(x)>`` for an explicit cotangent of one instance's output shape."""

    cotangent: np.ndarray


RegionReduction = Literal["sum", "mean"]
AxisSelection = int | slice
DetectionLayout = Literal["channels_first", "anchors_first"]


@dataclass(frozen=True)
class RegionTarget:
    """Explain the sum (or the mean) of the explained tensor over a region of one instance.

    For dense outputs: segmentation and text-detection maps, detector heads, sequences. The
    cotangent is the region's indicator (divided by the region's size for the mean).

    Attributes:
        axes: one entry per leading axis of one instance's output: an index (negative counts from
            the end) or a ``slice`` (Python's rules; its bounds must lie within the axis); axes left
            out are taken whole, so ``()`` is the whole tensor. ``(slice(None), slice(10, 20), 5)``
            is ``y[:, 10:20, 5]``.
        mask: instead of ``axes``, a bool or 0/1 array of one instance's output shape whose ones
            form the region.
        reduction: ``sum`` or ``mean`` over the region.
    """

    axes: tuple[AxisSelection, ...] = ()
    mask: np.ndarray | None = None
    reduction: RegionReduction = "sum"


@dataclass(frozen=True)
class DetectionTarget:
    """Explain the score of one class of one detection of a dense detector head.

    One instance's output holds, per detection (anchor), ``box_values`` leading values (box
    coordinates, objectness) and then one score per class: ``[box_values + C, A]`` with
    ``layout="channels_first"`` (YOLOv8's ``[4 + C, A]``) or ``[A, box_values + C]`` with
    ``layout="anchors_first"`` (YOLOv5's ``[A, 5 + C]`` with ``box_values=5``). Leading axes of
    size 1 are allowed. The cotangent is one-hot at the chosen class score of the chosen detection.

    Attributes:
        index: the detection (anchor) in ``[0, A)``; ``None``: the highest-scoring detection at the
            clean input (the largest class score, or the largest score of ``class_index`` when given).
        class_index: the class in ``[0, C)``; ``None``: the detection's highest class at the clean input.
        layout: ``channels_first`` or ``anchors_first``.
        box_values: values before the class scores of each detection (4 box coordinates by default).
    """

    index: int | None = None
    class_index: int | None = None
    layout: DetectionLayout = "channels_first"
    box_values: int = 4


Target = ClassTarget | PredictedClassTarget | CotangentTarget | RegionTarget | DetectionTarget


@dataclass(frozen=True)
class Progress:
    """Reported after each chunk: input draws done so far and the current ‖SE‖₂/‖mean‖₂."""

    samples_done: int
    samples_planned: int
    relative_error: float


@dataclass(frozen=True)
class Explanation:
    """The result of :func:`estimator.explain` for one instance.

    Attributes:
        attribution: the smoothed attribution, one instance's shape (reduced over ``channel_axis`` if asked).
        standard_error: per-feature standard error of ``attribution``, same shape.
        outputs: the explained tensor at the clean input, ``output_shape``.
        cotangent: the cotangent that was explained (one-hot for class targets), ``output_shape``.
        target_index: the class explained (also for detection targets), or ``None`` for an explicit
            cotangent or a region.
        samples: Monte Carlo draws used (input draws × weight draws for fusion).
        gradient_evaluations: VJP evaluations used, the clean forward/gradient pass included.
        seed: the seed that determines every random draw (echoed or chosen).
        inherent_noise: mean over features of the probability a noisy sample leaves the domain
            (Zhou et al. 2024, AdaptGrad, Eq. 9–10); 0 when no input noise is used.
        relative_error: final ‖SE‖₂/‖mean‖₂ (0 for deterministic methods).
        zero_scale_fraction: share of features whose input-noise scale ε is 0 (averaged over the path
            points for inner-smoothed IG); 0 without input noise. AdaptGrad gives features on a bound
            no noise, so a value near 1 means its result is close to the plain gradient.
        method: the method that was run.
        description: a short human-readable name, e.g. ``"AdaptGrad(gaussian, c=0.95) × IG(gauss_legendre, 50)"``.
    """

    attribution: np.ndarray
    standard_error: np.ndarray
    outputs: np.ndarray
    cotangent: np.ndarray
    target_index: int | None
    samples: int
    gradient_evaluations: int
    seed: int
    inherent_noise: float
    relative_error: float
    method: Method
    description: str
    extras: dict[str, Any] = field(default_factory=dict)
    zero_scale_fraction: float = 0.0
