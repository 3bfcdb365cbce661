"""``--region`` and ``--detection``: flag parsing, conflicts, the summary's wording, and one run end to end."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pytest

from estimator.method import DetectionTarget, RegionTarget
from models.demo import sample_path
from service.cli import main
from service.cli.explain_command import summarise, target_from_args, target_text
from service.cli.inputs import LoadedInput
from service.cli.method_flags import add_request_arguments, dense_target_from_args
from service.cli.output import BadInputError, UsageError
from service.client import ExplainTarget, InstanceExplanation, ModelInfo

DIGIT = str(sample_path("digit_3.png"))


def _parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_request_arguments(parser)
    parser.add_argument("--tensor")
    return parser.parse_args(list(argv))


def test_region_flags() -> None:
    assert dense_target_from_args(_parse("--region", ":,10:20,5")) == RegionTarget(
        axes=(slice(None), slice(10, 20), 5)
    )
    assert dense_target_from_args(_parse("--region=-1", "--region-mean")) == RegionTarget(
        axes=(-1,), reduction="mean"
    )
    assert dense_target_from_args(_parse()) is None


def test_region_mask_file(tmp_path: Path) -> None:
    mask = np.zeros((2, 3), bool)
    mask[1, 2] = True
    np.save(tmp_path / "mask.npy", mask)
    target = dense_target_from_args(_parse("--region", str(tmp_path / "mask.npy"), "--region-mean"))
    assert isinstance(target, RegionTarget) and target.reduction == "mean" and target.axes == ()
    assert target.mask is not None
    np.testing.assert_array_equal(target.mask, mask)
    with pytest.raises(BadInputError, match="--region: .*no such file"):
        dense_target_from_args(_parse("--region", str(tmp_path / "missing.npy")))


def test_detection_flags() -> None:
    assert dense_target_from_args(_parse("--detection")) == DetectionTarget()
    assert dense_target_from_args(_parse("--detection", "best", "--detection-class", "2")) == DetectionTarget(
        class_index=2
    )
    assert dense_target_from_args(
        _parse(
            "--detection",
            "17",
            "--detection-class",
            "0",
            "--detection-layout",
            "anchors_first",
            "--box-values",
            "5",
        )
    ) == DetectionTarget(index=17, class_index=0, layout="anchors_first", box_values=5)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--region", "1", "--detection"], "--region and --detection"),
        (["--region", "1", "--target", "3"], "--target 3 and --region"),
        (["--detection", "--target", "top:2"], "--target top:2 and --detection"),
        (["--region-mean"], "--region-mean needs --region"),
        (["--detection-class", "1"], "--detection-class need --detection"),
        (
            ["--box-values", "5", "--detection-layout", "anchors_first"],
            "--detection-layout, --box-values need",
        ),
        (["--detection", "first"], "--detection: expected a detection index"),
        (["--detection", "-1"], "--detection: expected a detection index"),
        (["--region", "1;2"], "--region: entry 0"),
    ],
)
def test_dense_flag_errors_are_usage_errors(argv: list[str], message: str) -> None:
    with pytest.raises(UsageError, match=message.replace("(", r"\(")):
        dense_target_from_args(_parse(*argv))


@pytest.mark.parametrize(
    "argv", [["--detection-class", "-1"], ["--box-values", "x"], ["--detection-layout", "rows"]]
)
def test_bad_dense_flag_values_exit_2(argv: list[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        _parse(*argv)
    assert exit_info.value.code == 2


def test_target_from_args_combines_a_region_with_tensor() -> None:
    assert target_from_args(_parse("--region", "0", "--tensor", "probabilities")) == ExplainTarget(
        selection=RegionTarget(axes=(0,)), output="probabilities"
    )
    assert target_from_args(_parse("--target", "4")) == 4


def _info() -> ModelInfo:
    return ModelInfo(
        name="yolo",
        ready=True,
        error="",
        input_name="x",
        input_shape=(1, 8, 8),
        output_name="y",
        output_shape=(7, 16),
        lower=np.zeros((1, 8, 8)),
        upper=np.ones((1, 8, 8)),
        labels=["cat", "dog", "bird"],
        feature_names=[],
        preprocessing={},
        provider="cpu",
        description="",
    )


def _explanation(outputs: np.ndarray, cotangent: np.ndarray, index: int | None) -> InstanceExplanation:
    return InstanceExplanation(
        attribution=np.zeros((1, 8, 8)),
        standard_error=np.zeros((1, 8, 8)),
        outputs=outputs,
        target_index=index,
        samples=1,
        gradient_evaluations=1,
        seed=0,
        inherent_noise=0.0,
        relative_error=0.0,
        queued_ms=0.0,
        computing_ms=1.0,
        provider="cpu",
        description="Grad",
        cotangent=cotangent,
    )


def test_summary_names_the_detection_and_its_score() -> None:
    outputs = np.arange(7 * 16, dtype=np.float32).reshape(7, 16) / 100
    cotangent = np.zeros((7, 16), np.float32)
    cotangent[4 + 1, 9] = 1.0
    item = LoadedInput(name="x", source="x.npy", tensor=np.zeros((1, 8, 8), np.float32), kind="tensor")
    summary = summarise(_explanation(outputs, cotangent, 1), item, _info(), DetectionTarget())
    target = summary["target"]
    assert target["text"] == "class 1 (dog) of detection 9"
    assert target["kind"] == "detection" and target["detection"] == 9 and target["label"] == "dog"
    assert target["score"] == pytest.approx(float(outputs[5, 9]))


def test_summary_names_the_region_and_its_value() -> None:
    outputs = np.arange(7 * 16, dtype=np.float32).reshape(7, 16)
    region = RegionTarget(axes=(slice(4, None), 3), reduction="mean")
    cotangent = np.zeros((7, 16), np.float32)
    cotangent[4:, 3] = 1 / 3
    explanation = _explanation(outputs, cotangent, None)
    assert target_text(_info(), explanation, region) == "the mean over 4:,3"
    item = LoadedInput(name="x", source="x.npy", tensor=np.zeros((1, 8, 8), np.float32), kind="tensor")
    target = summarise(explanation, item, _info(), region)["target"]
    assert target["region"] == "4:,3" and target["reduction"] == "mean"
    assert target["value"] == pytest.approx(float(outputs[4:, 3].mean()))
    mask = np.zeros((7, 16), bool)
    mask[0, :5] = True
    assert target_text(_info(), explanation, RegionTarget(mask=mask)) == "the sum over a mask of 5 elements"


def test_explain_a_region_end_to_end(
    server_address: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = [
        "explain",
        "--model",
        "digits_cnn",
        DIGIT,
        "--server",
        server_address,
        "--out",
        str(tmp_path),
        "--method",
        "vanilla",
        "--region",
        "3:5",
        "--seed",
        "1",
    ]
    code = main([*argv, "--json"])
    out = capsys.readouterr().out
    assert code == 0
    [summary] = json.loads(out)["explanations"]
    target = summary["target"]
    assert target["index"] is None and target["region"] == "3:5" and target["reduction"] == "sum"
    assert target["value"] == pytest.approx(sum(summary["outputs"][3:5]), rel=1e-5)
    # The sum over classes 3 and 4 is the sum of the two class explanations (the gradient is linear).
    parts = []
    for index in ("3", "4"):
        assert (
            main(
                [
                    "explain",
                    "--model",
                    "digits_cnn",
                    DIGIT,
                    "--server",
                    server_address,
                    "--out",
                    str(tmp_path / index),
                    "--method",
                    "vanilla",
                    "--target",
                    index,
                ]
            )
            == 0
        )
        parts.append(np.load(tmp_path / index / "digit_3.attribution.npy"))
    capsys.readouterr()
    np.testing.assert_allclose(
        np.load(tmp_path / "digit_3.attribution.npy"), parts[0] + parts[1], rtol=1e-4, atol=1e-6
    )
    assert main(argv) == 0
    assert "explained the sum over 3:5, value" in capsys.readouterr().out


def test_detection_on_a_classifier_is_invalid_argument(
    server_address: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(
        [
            "explain",
            "--model",
            "digits_cnn",
            DIGIT,
            "--server",
            server_address,
            "--out",
            str(tmp_path),
            "--method",
            "vanilla",
            "--detection",
        ]
    )
    err = capsys.readouterr().err
    assert code != 0
    assert "INVALID_ARGUMENT" in err and "target.detection" in err and "explain a region of it instead" in err


def test_compare_names_the_region(
    server_address: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(
        [
            "compare",
            "-m",
            "digits_cnn",
            DIGIT,
            "--server",
            server_address,
            "--out",
            str(tmp_path),
            "--methods",
            "grad,smoothgrad",
            "--samples",
            "4",
            "--seed",
            "2",
            "--region",
            "3:5",
            "--json",
        ]
    )
    out = capsys.readouterr().out
    assert code == 0
    document = json.loads(out)
    assert document["target"]["text"] == "the sum over 3:5" and document["target"]["index"] is None
