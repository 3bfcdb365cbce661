"""Command-line flags ↔ :class:`estimator.method.Method`, targets and method specs for ``compare``.

Every field of ``Method`` is a flag of the same name (``ig_steps`` → ``--ig-steps``) whose default
is the field's default: flags left out are not passed, so ``Method``'s own defaults apply.

``--method`` presets (a shorthand for ``--mode`` / ``--scale``; an explicit ``--mode`` or ``--scale``
that contradicts the preset is a usage error):

===========  ==========================  =====================================================
preset       sets                        method
===========  ==========================  =====================================================
vanilla      mode=none                   the plain gradient (also: ``grad``)
smoothgrad   mode=input, scale=fixed     SmoothGrad, Smilkov et al. 2017 (ε = α·range)
adaptgrad    mode=input, scale=adaptive  AdaptGrad, Zhou et al. 2024, AdaptGrad, Eq. 11–13
truncgrad    mode=input, scale=truncated fixed ε, samples truncated to the domain (docs/method.md §4.3)
noisegrad    mode=parameter              NoiseGrad, Bykov et al. 2022 (weights × (1 + σ_w z))
fusiongrad   mode=fusion, scale=fixed    FusionGrad, Bykov et al. 2022 (weights and inputs)
===========  ==========================  =====================================================

Imports the estimator's vocabulary, the standard library and numpy only.
"""

from __future__ import annotations

import argparse
import re
import typing
from collections.abc import Collection
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np

from estimator import check_seed
from estimator.bases import base_method_names
from estimator.errors import InvalidArgumentError
from estimator.kernels import KERNEL_NAMES
from estimator.method import (
    AdaptiveRule,
    BaselineName,
    BaseMethod,
    ChannelReduction,
    DetectionLayout,
    DetectionTarget,
    IGSmoothing,
    IntegrationRule,
    Method,
    RegionReduction,
    RegionTarget,
    ScalePolicyName,
    Transform,
)
from estimator.samplers import SAMPLER_NAMES
from estimator.smoothing import smoothing_names
from estimator.targets import parse_region
from service.cli.output import BadInputError, UsageError

PRESETS: dict[str, dict[str, str]] = {
    "vanilla": {"mode": "none"},
    "smoothgrad": {"mode": "input", "scale": "fixed"},
    "adaptgrad": {"mode": "input", "scale": "adaptive"},
    "truncgrad": {"mode": "input", "scale": "truncated"},
    "noisegrad": {"mode": "parameter"},
    "fusiongrad": {"mode": "fusion", "scale": "fixed"},
}
_PRESET_ALIASES = {"grad": "vanilla", "gradient": "vanilla", "none": "vanilla"}

# Display names in the papers' spelling, for titles of figures.
_PRESET_TITLES = {
    "vanilla": "Grad",
    "smoothgrad": "SmoothGrad",
    "adaptgrad": "AdaptGrad",
    "truncgrad": "TruncGrad",
    "noisegrad": "NoiseGrad",
    "fusiongrad": "FusionGrad",
}
# Seed 001 names the smoothed IG variants S-IG and A-IG.
_IG_TITLES = {"vanilla": "IG", "smoothgrad": "S-IG", "adaptgrad": "A-IG"}

_BASE_ALIASES: dict[str, BaseMethod] = {
    "grad": "gradient",
    "gradient": "gradient",
    "gxi": "gradient_x_input",
    "gi": "gradient_x_input",
    "x_input": "gradient_x_input",
    "gradient_x_input": "gradient_x_input",
    "ig": "integrated_gradients",
    "integrated_gradients": "integrated_gradients",
}


DEFAULT_COMPARE_METHODS = (
    "grad",
    "smoothgrad",
    "adaptgrad",
    "grad:gxi",
    "smoothgrad:gxi",
    "adaptgrad:gxi",
    "grad:ig",
    "smoothgrad:ig",
    "adaptgrad:ig",
)

_DEFAULTS = Method()


# ``method.<field>`` in the domain's error messages, and the flag that sets the field.
_FIELD_FLAGS = {f"method.{f.name}": "--" + f.name.replace("_", "-") for f in fields(Method)}
_FIELD_FLAGS["method.ig_baseline_tensor"] = "--ig-baseline"  # the wire's name of an array baseline
_FIELD_PATTERN = re.compile(r"\bmethod\.[a-z_]+")


def with_flags(message: str) -> str:
    """``message`` with every ``method.<field>`` the estimator or the server names replaced by its
    flag (``method.samples`` → ``--samples``); other words are left alone."""
    return _FIELD_PATTERN.sub(lambda match: _FIELD_FLAGS.get(match.group(0), match.group(0)), message)


def _choices(literal: Any) -> tuple[str, ...]:
    return tuple(typing.get_args(literal))


def _default(name: str) -> str:
    value = getattr(_DEFAULTS, name)
    return "none" if value is None else str(value)


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from err
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def _nonnegative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"expected an integer ≥ 0, got {text!r}") from err
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected an integer ≥ 0, got {value}")
    return value


def _nonnegative_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from err
    if not np.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"expected a finite number ≥ 0, got {text}")
    return value


def add_method_arguments(parser: argparse.ArgumentParser, *, exclude: Collection[str] = ()) -> None:
    """Add one flag per :class:`Method` field and ``--method`` presets to ``parser``.

    ``exclude`` names destinations (``method``, ``base``, ``mode``, ``scale``, ...) a command fixes itself.
    """
    group = parser.add_argument_group(
        "method", "How the explanation is computed; every default is the API's (estimator.Method)."
    )

    def add(*names: str, **options: Any) -> None:
        dest = options.get("dest") or names[0].lstrip("-").replace("-", "_")
        if dest not in exclude:
            group.add_argument(*names, **options)

    if "method" not in exclude:
        group.add_argument(
            "--method",
            choices=sorted(PRESETS),
            help="preset for --mode/--scale: vanilla (mode=none), smoothgrad (input, fixed), adaptgrad "
            "(input, adaptive), truncgrad (input, truncated), noisegrad (parameter), fusiongrad "
            "(fusion, fixed). Default: smoothgrad.",
        )
    add("--base", choices=base_method_names(), help=f"what is averaged (default: {_default('base')})")
    add("--mode", choices=smoothing_names(), help=f"where noise goes (default: {_default('mode')})")
    add(
        "--kernel",
        choices=KERNEL_NAMES,
        help=f"input-noise kernel, see docs/method.md §3 (default: {_default('kernel')})",
    )
    add(
        "--scale",
        choices=_choices(ScalePolicyName),
        help=f"input-noise scale policy (default: {_default('scale')})",
    )
    add(
        "--alpha",
        type=_nonnegative_float,
        help=f"fixed/truncated noise level as a fraction of the input range (default: {_default('alpha')})",
    )
    add(
        "--sigma",
        help="fixed/truncated noise scale in input units: a number or a .npy file broadcastable to one "
        "input; overrides --alpha (default: none)",
    )
    add("--confidence", type=float, help=f"AdaptGrad confidence level c (default: {_default('confidence')})")
    add(
        "--adaptive-rule",
        choices=_choices(AdaptiveRule),
        help="AdaptGrad quantile: one_sided is Eq. 13 of Zhou et al. 2024, AdaptGrad, p=(3+c)/4; "
        "two_sided is the authors' "
        f"code, p=(1+c)/2 (default: {_default('adaptive_rule')})",
    )
    add("--samples", type=_positive_int, help=f"input-noise draws N (default: {_default('samples')})")
    add(
        "--weight-draws",
        type=_positive_int,
        help=f"weight-noise draws M (default: {_default('weight_draws')})",
    )
    add(
        "--weight-sigma",
        type=_nonnegative_float,
        help=f"weight noise σ_w, weights × (1 + σ_w z) (default: {_default('weight_sigma')})",
    )
    add(
        "--weight-exclude",
        action="append",
        metavar="GLOB",
        help="weight names left clean (fnmatch pattern; repeatable)",
    )
    add(
        "--ig-steps",
        type=_positive_int,
        help=f"integrated gradients path points (default: {_default('ig_steps')})",
    )
    add(
        "--ig-rule",
        choices=_choices(IntegrationRule),
        help=f"integrated gradients quadrature (default: {_default('ig_rule')})",
    )
    add(
        "--ig-baseline",
        "--baseline",
        dest="ig_baseline",
        help=f"IG baseline: {', '.join(_choices(BaselineName))} or a .npy file of one input's shape "
        f"(default: {_default('ig_baseline')})",
    )
    add(
        "--ig-smoothing",
        choices=_choices(IGSmoothing),
        help="inner: smooth the gradient at each path point (S-IG/A-IG); outer: average IG over noisy "
        f"inputs (default: {_default('ig_smoothing')})",
    )
    add(
        "--transform",
        choices=_choices(Transform),
        help=f"output transform (default: {_default('transform')})",
    )
    add(
        "--channel-axis",
        type=int,
        help="axis of one input (no batch axis) to reduce over, e.g. 0 for (C, H, W) (default: none)",
    )
    add(
        "--channel-reduction",
        choices=_choices(ChannelReduction),
        help=f"reduction over --channel-axis (default: {_default('channel_reduction')})",
    )
    add(
        "--tol",
        type=_nonnegative_float,
        help="stop once ‖SE‖₂/‖mean‖₂ ≤ TOL; --samples (or --max-samples) is then the cap (default: none)",
    )
    add("--max-samples", type=_positive_int, help="cap on input draws when --tol is set (default: --samples)")
    add(
        "--sampler",
        choices=SAMPLER_NAMES,
        help="layout of the input-noise draws: iid, antithetic (pairs u, -u), latin_hypercube or sobol "
        f"(randomised point sets; see --replicates) (default: {_default('sampler')})",
    )
    add(
        "--replicates",
        type=_positive_int,
        help="latin_hypercube/sobol: independent point sets the samples are split into, the units of the "
        f"standard error; --samples must be a multiple (default: {_default('replicates')})",
    )


def checked_seed(value: int, flag: str = "--seed") -> int:
    """``value`` if it is a seed (:func:`estimator.check_seed`, the one rule: an integer in
    ``[0, 2**64)``), else :class:`UsageError` in the estimator's words, naming ``flag``."""
    try:
        return check_seed(value, flag)
    except InvalidArgumentError as err:
        raise UsageError(str(err)) from None


def add_request_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the per-request flags that are not part of :class:`Method`: target, seed, bounds."""
    group = parser.add_argument_group("request")
    group.add_argument(
        "--target",
        default="predicted",
        help="what to explain: a class index, 'predicted' (arg-max at the clean input), 'top:K' (the K "
        "highest classes), or a .npy cotangent of one output's shape (default: predicted)",
    )
    group.add_argument(
        "--seed", type=int, help="random seed; the same seed gives the same numbers (default: random)"
    )
    add_dense_target_arguments(parser)
    group.add_argument(
        "--lower",
        help="lower bound of the input domain: a number or a .npy file (default: the model's config)",
    )
    group.add_argument(
        "--upper",
        help="upper bound of the input domain: a number or a .npy file (default: the model's config)",
    )


def add_dense_target_arguments(parser: argparse.ArgumentParser) -> None:
    """Add ``--region`` / ``--detection`` and their options (read by :func:`dense_target_from_args`)."""
    dense = parser.add_argument_group(
        "dense outputs",
        "Targets for maps and detector heads, instead of --target (one instance, no batch axis).",
    )
    dense.add_argument(
        "--region",
        metavar="SPEC",
        help="explain the sum over a region of the explained tensor: numpy-style indices or slices per axis, "
        "e.g. ':,10:20,5' is y[:, 10:20, 5] (axes left out are whole; write --region=-1,... when it starts "
        "with a minus), or a .npy mask of the tensor's instance shape (bool or 0/1)",
    )
    dense.add_argument(
        "--region-mean", action="store_true", help="explain the mean over --region instead of the sum"
    )
    dense.add_argument(
        "--detection",
        nargs="?",
        const="best",
        metavar="I",
        help="explain a class score of detection (anchor) I of a detector head; without I or with 'best', the "
        "highest-scoring detection at the clean input",
    )
    dense.add_argument(
        "--detection-class",
        type=_nonnegative_int,
        metavar="C",
        help="the class of --detection (default: the detection's highest class at the clean input)",
    )
    dense.add_argument(
        "--detection-layout",
        choices=_choices(DetectionLayout),
        help="channels_first: [box values + classes, anchors] per instance (YOLOv8); anchors_first: "
        "[anchors, box values + classes] (default: channels_first)",
    )
    dense.add_argument(
        "--box-values",
        type=_nonnegative_int,
        metavar="N",
        help="values before the class scores of each detection: 4 box coordinates, 5 with objectness "
        "(default: 4)",
    )


def _load_npy(text: str, flag: str) -> np.ndarray:
    path = Path(text)
    if not path.is_file():
        raise BadInputError(f"{flag}: expected a number or a .npy file, got {text!r} (no such file)")
    try:
        array = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as err:
        raise BadInputError(f"{flag}: {path} is not a readable .npy file: {err}") from err
    if not isinstance(array, np.ndarray) or not np.issubdtype(array.dtype, np.number):
        raise BadInputError(f"{flag}: {path} must hold a numeric array")
    return array.astype(np.float32)


def number_or_array(text: str | None, flag: str) -> float | np.ndarray | None:
    """Parse a flag that takes a number or a ``.npy`` file; ``None`` stays ``None``."""
    if text is None:
        return None
    try:
        return float(text)
    except ValueError:
        return _load_npy(text, flag)


def resolve_preset(name: str) -> str:
    """The canonical preset name for ``name`` (case-insensitive, aliases such as ``grad``)."""
    key = name.strip().lower()
    key = _PRESET_ALIASES.get(key, key)
    if key not in PRESETS:
        known = ", ".join(sorted([*PRESETS, *_PRESET_ALIASES]))
        raise UsageError(f"method: expected one of {known}, got {name!r}")
    return key


def method_from_args(args: argparse.Namespace) -> Method:
    """Build a :class:`Method` from parsed flags; flags left out keep ``Method``'s defaults."""
    options: dict[str, Any] = {}
    preset = getattr(args, "method", None)
    if preset is not None:
        preset = resolve_preset(preset)
        for key, setting in PRESETS[preset].items():
            given = getattr(args, key, None)
            if given is not None and given != setting:
                raise UsageError(
                    f"--{key} {given} contradicts --method {preset}, which sets {key}={setting}; "
                    f"drop one of them"
                )
            options[key] = setting
    for item in fields(Method):
        value: Any = getattr(args, item.name, None)
        if value is None or item.name in options:
            continue
        if item.name == "sigma":
            value = number_or_array(value, "--sigma")
        elif item.name == "ig_baseline":
            if value not in _choices(BaselineName):
                value = _load_npy(value, "--ig-baseline")
        elif item.name == "weight_exclude":
            value = tuple(value)
        options[item.name] = value
    return Method(**options)


TargetSpec = int | str | tuple[str, int] | np.ndarray


def parse_target(text: str) -> TargetSpec:
    """``--target``: ``7`` → 7, ``predicted``, ``top:K`` → ``("top_k", K)``, ``file.npy`` → a cotangent."""
    value = text.strip()
    if value.lower() == "predicted":
        return "predicted"
    if value.lower().startswith("top:"):
        count = value[4:]
        if not count.isdigit() or int(count) < 1:
            raise UsageError(f"--target: expected top:K with K a positive integer, got {text!r}")
        return ("top_k", int(count))
    try:
        index = int(value)
    except ValueError:
        index = None
    if index is not None:
        if index < 0:
            raise UsageError(f"--target: expected a class index ≥ 0, got {index}")
        return index
    if value.endswith(".npy"):
        return _load_npy(value, "--target")
    raise UsageError(
        f"--target: expected a class index, 'predicted', 'top:K' or a .npy cotangent, got {text!r}"
    )


def _load_mask(text: str) -> np.ndarray:
    path = Path(text)
    if not path.is_file():
        raise BadInputError(
            f"--region: expected indices such as ':,10:20,5' or a .npy mask, got {text!r} (no such file)"
        )
    try:
        array = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as err:
        raise BadInputError(f"--region: {path} is not a readable .npy file: {err}") from err
    if not isinstance(array, np.ndarray) or not (
        array.dtype == np.bool_ or np.issubdtype(array.dtype, np.number)
    ):
        raise BadInputError(f"--region: {path} must hold a bool or 0/1 numeric array")
    return array


def dense_target_from_args(args: argparse.Namespace) -> RegionTarget | DetectionTarget | None:
    """The region or detection target of ``--region`` / ``--detection`` and their options, or ``None``.

    Ranges are checked by the server against the explained tensor; here only what the flags alone
    decide: conflicts, options without their flag, and the region's syntax.
    """
    region, detection = getattr(args, "region", None), getattr(args, "detection", None)
    if region is not None and detection is not None:
        raise UsageError("--region and --detection both say what to explain; drop one of them")
    if (region is not None or detection is not None) and getattr(args, "target", "predicted") != "predicted":
        flag = "--region" if region is not None else "--detection"
        raise UsageError(f"--target {args.target} and {flag} both say what to explain; drop one of them")
    if region is None and getattr(args, "region_mean", False):
        raise UsageError("--region-mean needs --region (the region to average over)")
    options = {
        "class_index": "--detection-class",
        "layout": "--detection-layout",
        "box_values": "--box-values",
    }
    given = {
        key: getattr(args, dest)
        for key, dest in (
            ("class_index", "detection_class"),
            ("layout", "detection_layout"),
            ("box_values", "box_values"),
        )
        if getattr(args, dest, None) is not None
    }
    if detection is None and given:
        raise UsageError(
            f"{', '.join(options[key] for key in given)} need --detection (a detector-head target)"
        )
    if region is not None:
        reduction: RegionReduction = "mean" if args.region_mean else "sum"
        if region.strip().endswith(".npy"):
            return RegionTarget(mask=_load_mask(region.strip()), reduction=reduction)
        try:
            return RegionTarget(axes=parse_region(region, "--region"), reduction=reduction)
        except InvalidArgumentError as err:
            raise UsageError(str(err)) from None
    if detection is not None:
        index: int | None = None
        if detection.strip().lower() != "best":
            try:
                index = int(detection)
            except ValueError:
                index = -1
            if index < 0:
                raise UsageError(f"--detection: expected a detection index ≥ 0 or 'best', got {detection!r}")
        return DetectionTarget(index=index, **given)
    return None


@dataclass(frozen=True)
class MethodSpec:
    """One entry of ``compare --methods``: a preset and a base, with the title the papers use."""

    preset: str
    base: BaseMethod
    title: str
    key: str


def parse_method_spec(text: str) -> MethodSpec:
    """Parse ``PRESET[:BASE]``, e.g. ``adaptgrad``, ``smoothgrad:gxi``, ``grad:ig``.

    BASE is ``grad`` (default), ``gxi`` (gradient × input) or ``ig`` (integrated gradients), or a
    full ``--base`` name.
    """
    preset_text, _, base_text = text.strip().partition(":")
    preset = resolve_preset(preset_text)
    base_key = base_text.strip().lower() or "grad"
    if base_key not in _BASE_ALIASES:
        raise UsageError(
            f"--methods: base of {text!r} must be one of {', '.join(sorted(_BASE_ALIASES))}, got {base_text!r}"
        )
    base = _BASE_ALIASES[base_key]
    name = _PRESET_TITLES[preset]
    if base == "gradient":
        title = name
    elif base == "gradient_x_input":
        title = f"{name} × Input"
    else:
        title = _IG_TITLES.get(preset, f"{name} IG")
    suffix = {"gradient": "", "gradient_x_input": ":gxi", "integrated_gradients": ":ig"}[base]
    key = ("grad" if preset == "vanilla" else preset) + suffix
    return MethodSpec(preset=preset, base=base, title=title, key=key)


def parse_method_list(text: str) -> list[MethodSpec]:
    """Parse a comma-separated ``--methods`` list; duplicates are a usage error."""
    specs = [parse_method_spec(part) for part in text.split(",") if part.strip()]
    if not specs:
        raise UsageError(f"--methods: expected a comma-separated list of methods, got {text!r}")
    keys = [spec.key for spec in specs]
    duplicates = sorted({key for key in keys if keys.count(key) > 1})
    if duplicates:
        raise UsageError(f"--methods: each method may appear once, got {', '.join(duplicates)} twice")
    return specs


def method_for_spec(spec: MethodSpec, args: argparse.Namespace) -> Method:
    """The :class:`Method` of ``spec`` with every other option taken from the parsed flags."""
    fixed = {"method": spec.preset, "base": spec.base, "mode": None, "scale": None}
    return method_from_args(argparse.Namespace(**{**vars(args), **fixed}))
