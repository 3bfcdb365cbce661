"""``mollify explain --explained-input``: attributions at a tensor inside the graph (layer attribution)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from estimator.method import Method
from models.demo import sample_path
from service.cli import main
from service.cli.inputs import InputSpec, load_inputs, stack
from service.client import ExplainerClient

DIGIT = str(sample_path("digit_3.png"))
FEATURE_MAP = "relu"  # the first convolution's activations in the bundled digits_cnn


def test_explain_at_a_feature_map_equals_the_client(
    server_address: str, out_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = [
        "explain",
        "-m",
        "digits_cnn",
        DIGIT,
        "--server",
        server_address,
        "--out",
        str(out_dir),
        "--method",
        "vanilla",
        "--target",
        "3",
        "--explained-input",
        FEATURE_MAP,
        "--lower",
        "0",
        "--upper",
        "20",
        "--json",
    ]
    assert main(argv) == 0
    [summary] = json.loads(capsys.readouterr().out)["explanations"]
    with ExplainerClient(server_address) as client:
        info = client.get_model("digits_cnn")
        pixels = stack(load_inputs([DIGIT], InputSpec.from_model_info(info)))
        [expected] = client.explain(
            "digits_cnn",
            pixels,
            method=Method(base="gradient", mode="none"),
            target=3,
            lower=0.0,
            upper=20.0,
            explained_input=FEATURE_MAP,
        )
    assert expected.attribution.shape != tuple(info.input_shape)
    assert summary["attribution_shape"] == list(expected.attribution.shape)
    written = np.load(summary["files"]["attribution"])
    np.testing.assert_array_equal(written, expected.attribution)


def test_explain_at_a_feature_map_without_bounds_names_them(
    server_address: str, out_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = [
        "explain",
        "-m",
        "digits_cnn",
        DIGIT,
        "--server",
        server_address,
        "--out",
        str(out_dir),
        "--method",
        "vanilla",
        "--explained-input",
        FEATURE_MAP,
    ]
    assert main(argv) != 0
    err = capsys.readouterr().err
    assert err.startswith("INVALID_ARGUMENT: ") and "lower and upper" in err and repr(FEATURE_MAP) in err
    argv[-1] = "no_such_tensor"
    assert main(argv) != 0
    err = capsys.readouterr().err
    assert "'no_such_tensor' is not a tensor of the graph" in err and repr(FEATURE_MAP) in err
