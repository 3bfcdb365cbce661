"""Flags ↔ estimator.Method: defaults, presets, every field reachable, targets, compare specs."""

from __future__ import annotations

import argparse
from dataclasses import fields
from pathlib import Path

import numpy as np
import pytest

from estimator.method import Method
from service.cli.method_flags import (
    DEFAULT_COMPARE_METHODS,
    PRESETS,
    add_method_arguments,
    add_request_arguments,
    method_for_spec,
    method_from_args,
    parse_method_list,
    parse_method_spec,
    parse_target,
    with_flags,
)
from service.cli.output import BadInputError, UsageError


def _parse(*argv: str, exclude: tuple[str, ...] = ()) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_method_arguments(parser, exclude=exclude)
    add_request_arguments(parser)
    return parser.parse_args(list(argv))


def test_no_flags_gives_the_api_defaults() -> None:
    assert method_from_args(_parse()) == Method()


def test_every_method_field_has_a_flag_of_the_same_name() -> None:
    dests = set(vars(_parse()))
    missing = [item.name for item in fields(Method) if item.name not in dests]
    assert missing == []


def test_errors_in_domain_words_name_the_flags() -> None:
    # The estimator and the server name Method fields; the CLI shows the flag that sets each.
    message = "method.samples: the latin_hypercube sampler splits the draws into 3 equal point sets (method.replicates)"
    assert with_flags(message) == (
        "--samples: the latin_hypercube sampler splits the draws into 3 equal point sets (--replicates)"
    )
    assert (
        with_flags("method.ig_baseline_tensor: expected finite values")
        == "--ig-baseline: expected finite values"
    )
    assert with_flags("target.class_index: method.nothing_such") == "target.class_index: method.nothing_such"
    flags = {f"--{item.name.replace('_', '-')}" for item in fields(Method)}
    assert {with_flags(f"method.{item.name}") for item in fields(Method)} == flags


@pytest.mark.parametrize(
    ("preset", "mode", "scale"),
    [
        ("vanilla", "none", "fixed"),
        ("smoothgrad", "input", "fixed"),
        ("adaptgrad", "input", "adaptive"),
        ("truncgrad", "input", "truncated"),
        ("noisegrad", "parameter", "fixed"),
        ("fusiongrad", "fusion", "fixed"),
    ],
)
def test_presets_set_mode_and_scale(preset: str, mode: str, scale: str) -> None:
    method = method_from_args(_parse("--method", preset))
    assert (method.mode, method.scale) == (mode, scale)
    assert set(PRESETS) >= {preset}


def test_all_options_reach_the_method() -> None:
    args = _parse(
        "--method",
        "adaptgrad",
        "--base",
        "integrated_gradients",
        "--kernel",
        "poisson",
        "--alpha",
        "0.1",
        "--sigma",
        "0.3",
        "--confidence",
        "0.99",
        "--adaptive-rule",
        "two_sided",
        "--samples",
        "7",
        "--weight-draws",
        "3",
        "--weight-sigma",
        "0.05",
        "--weight-exclude",
        "fc*",
        "--weight-exclude",
        "bn*",
        "--ig-steps",
        "9",
        "--ig-rule",
        "riemann_middle",
        "--baseline",
        "white",
        "--ig-smoothing",
        "outer",
        "--transform",
        "abs",
        "--channel-axis",
        "0",
        "--channel-reduction",
        "sum",
        "--tol",
        "0.05",
        "--max-samples",
        "90",
    )
    assert method_from_args(args) == Method(
        base="integrated_gradients",
        mode="input",
        kernel="poisson",
        scale="adaptive",
        alpha=0.1,
        sigma=0.3,
        confidence=0.99,
        adaptive_rule="two_sided",
        samples=7,
        weight_draws=3,
        weight_sigma=0.05,
        weight_exclude=("fc*", "bn*"),
        ig_steps=9,
        ig_rule="riemann_middle",
        ig_baseline="white",
        ig_smoothing="outer",
        transform="abs",
        channel_axis=0,
        channel_reduction="sum",
        tol=0.05,
        max_samples=90,
    )


def test_sigma_and_baseline_read_npy_files(tmp_path: Path) -> None:
    np.save(tmp_path / "sigma.npy", np.full((1, 8, 8), 0.25))
    np.save(tmp_path / "base.npy", np.zeros((1, 8, 8)))
    method = method_from_args(
        _parse("--sigma", str(tmp_path / "sigma.npy"), "--ig-baseline", str(tmp_path / "base.npy"))
    )
    assert isinstance(method.sigma, np.ndarray) and method.sigma.shape == (1, 8, 8)
    assert isinstance(method.ig_baseline, np.ndarray) and method.ig_baseline.dtype == np.float32


def test_missing_npy_names_the_flag(tmp_path: Path) -> None:
    with pytest.raises(BadInputError, match="--sigma"):
        method_from_args(_parse("--sigma", str(tmp_path / "nope.npy")))


def test_contradicting_preset_and_scale_is_a_usage_error() -> None:
    with pytest.raises(UsageError, match="--scale fixed contradicts --method adaptgrad"):
        method_from_args(_parse("--method", "adaptgrad", "--scale", "fixed"))


def test_explicit_mode_without_preset_is_kept() -> None:
    assert method_from_args(_parse("--mode", "parameter")).mode == "parameter"


@pytest.mark.parametrize(
    "argv", [["--samples", "0"], ["--alpha", "-1"], ["--base", "saliency"], ["--ig-steps", "x"]]
)
def test_bad_flag_values_exit_2(argv: list[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        _parse(*argv)
    assert exit_info.value.code == 2


def test_targets(tmp_path: Path) -> None:
    assert parse_target("3") == 3
    assert parse_target("predicted") == "predicted"
    assert parse_target("top:2") == ("top_k", 2)
    np.save(tmp_path / "w.npy", np.eye(10)[4])
    cotangent = parse_target(str(tmp_path / "w.npy"))
    assert isinstance(cotangent, np.ndarray) and int(np.argmax(cotangent)) == 4
    for bad in ("top:0", "-1", "cat"):
        with pytest.raises(UsageError, match="--target"):
            parse_target(bad)


def test_method_specs_use_the_papers_names() -> None:
    titles = [spec.title for spec in parse_method_list(",".join(DEFAULT_COMPARE_METHODS))]
    assert titles == [
        "Grad",
        "SmoothGrad",
        "AdaptGrad",
        "Grad × Input",
        "SmoothGrad × Input",
        "AdaptGrad × Input",
        "IG",
        "S-IG",
        "A-IG",
    ]
    spec = parse_method_spec("AdaptGrad:ig")
    assert (spec.preset, spec.base, spec.key) == ("adaptgrad", "integrated_gradients", "adaptgrad:ig")


def test_method_list_errors() -> None:
    with pytest.raises(UsageError, match="twice"):
        parse_method_list("grad,vanilla")
    with pytest.raises(UsageError, match="method: expected one of"):
        parse_method_list("grad,magicgrad")
    with pytest.raises(UsageError, match="base of"):
        parse_method_list("smoothgrad:lrp")


def test_compare_specs_keep_the_shared_options() -> None:
    args = _parse("--samples", "12", "--confidence", "0.9", exclude=("method", "base", "mode", "scale"))
    method = method_for_spec(parse_method_spec("adaptgrad:gxi"), args)
    assert method == Method(
        base="gradient_x_input", mode="input", scale="adaptive", samples=12, confidence=0.9
    )
    assert not hasattr(args, "mode")
