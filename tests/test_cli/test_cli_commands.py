"""The client commands end to end: ``service.cli.main([...])`` against a real server on port 0."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from estimator.method import Method
from models.demo import sample_path
from service.cli import main
from service.cli.explain_command import explain_inputs
from service.client import ExplainerClient

DIGIT = str(sample_path("digit_3.png"))
ROWS = str(sample_path("breast_cancer_rows.csv"))
REPO_ROOT = Path(__file__).resolve().parents[2]


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_models_lists_the_demo_models(server_address: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = _run(capsys, "models", "--server", server_address, "--json")
    assert code == 0
    models = {m["name"]: m for m in json.loads(out)["models"]}
    assert models["digits_cnn"]["ready"] and models["digits_cnn"]["input"]["shape"] == [1, 8, 8]
    assert models["breast_cancer_mlp"]["input"]["shape"] == [30]
    code, out, _ = _run(capsys, "models", "--server", server_address)
    assert (
        code == 0
        and "digits_cnn" in out
        and "ready" in out
        and "input (1, 8, 8)" in out
        and "input (30,)" in out
    )


def test_health(server_address: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert _run(capsys, "health", "--server", server_address)[:2] == (
        0,
        f"SERVING: the server at {server_address}\n",
    )
    assert _run(capsys, "health", "digits_cnn", "--server", server_address)[0] == 0
    code, _, err = _run(capsys, "health", "no_such_model", "--server", server_address)
    assert (
        code == 3
        and err == f"NOT_FOUND: the server at {server_address} knows no service or model 'no_such_model'\n"
    )


def test_explain_digit_writes_arrays_summary_and_heatmap(
    server_address: str, out_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = [
        "explain",
        "--model",
        "digits_cnn",
        DIGIT,
        "--server",
        server_address,
        "--out",
        str(out_dir),
        "--samples",
        "24",
        "--seed",
        "5",
        "--method",
        "adaptgrad",
        "--json",
    ]
    code, out, err = _run(capsys, *argv)
    # 52 % of the digit's pixels are blank paper, on the lower bound: AdaptGrad gives them no noise.
    assert code == 0 and err.startswith("warning: ") and "52% of the features got no noise" in err
    [summary] = json.loads(out)["explanations"]
    assert summary["zero_scale_fraction"] == 33 / 64
    assert summary["seed"] == 5 and summary["samples"] == 24
    assert summary["target"]["index"] == summary["prediction"]["index"] == 3
    assert summary["target"]["label"] == "3" and "AdaptGrad" in summary["method"]
    assert 0 < summary["inherent_noise"] < 0.05 and 0 < summary["relative_error"] < 1
    assert summary["timings"]["computing_ms"] > 0 and summary["provider"]
    attribution = np.load(out_dir / "digit_3.attribution.npy")
    assert attribution.shape == (1, 8, 8) and np.load(out_dir / "digit_3.standard_error.npy").shape == (
        1,
        8,
        8,
    )
    assert json.loads((out_dir / "digit_3.json").read_text())["files"]["heatmap"] == str(
        out_dir / "digit_3.heatmap.png"
    )
    heatmap = np.asarray(Image.open(out_dir / "digit_3.heatmap.png").convert("RGB"), dtype=np.float64)
    assert heatmap.shape[0] >= 256 and heatmap.shape[1] >= 3 * 256
    assert heatmap.std() > 20
    # The same seed gives the same numbers through the whole chain.
    assert _run(capsys, *argv[:-1], "--out", str(out_dir / "again"))[0] == 0
    np.testing.assert_array_equal(np.load(out_dir / "again" / "digit_3.attribution.npy"), attribution)


def test_explain_tabular_rows_prints_a_ranked_table_and_bar_charts(
    server_address: str, out_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = _run(
        capsys,
        "explain",
        "-m",
        "breast_cancer_mlp",
        ROWS,
        "--server",
        server_address,
        "--out",
        str(out_dir),
        "--samples",
        "16",
        "--top",
        "5",
    )
    assert code == 0
    assert out.count("feature") >= 5 and "worst" in out and "negative | positive" in out
    for row in range(1, 6):
        assert (out_dir / f"breast_cancer_rows_row{row}.bars.png").is_file()
        assert np.load(out_dir / f"breast_cancer_rows_row{row}.attribution.npy").shape == (30,)


def test_top_k_names_files_by_class(
    server_address: str, out_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = _run(
        capsys,
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
        "top:2",
        "--no-figures",
        "--json",
    )
    assert code == 0
    explanations = json.loads(out)["explanations"]
    assert [e["target"]["rank"] for e in explanations] == [0, 1]
    first, second = (e["target"]["index"] for e in explanations)
    assert first == 3 and second != 3
    assert (out_dir / f"digit_3.class{second}.attribution.npy").is_file()
    assert not list(out_dir.glob("*.png"))


def test_compare_writes_one_figure_with_every_method(
    server_address: str, out_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = _run(
        capsys,
        "compare",
        "-m",
        "digits_cnn",
        DIGIT,
        "--server",
        server_address,
        "--out",
        str(out_dir),
        "--methods",
        "grad,smoothgrad,adaptgrad,grad:ig",
        "--samples",
        "8",
        "--ig-steps",
        "8",
        "--json",
    )
    assert code == 0
    document = json.loads(out)
    assert [m["title"] for m in document["methods"]] == ["Grad", "SmoothGrad", "AdaptGrad", "IG"]
    assert len({m["method"] for m in document["methods"]}) == 4
    figure = np.asarray(Image.open(out_dir / "digit_3.compare.png").convert("RGB"), dtype=np.float64)
    assert figure.shape[1] > figure.shape[0] > 150 and figure.std() > 20
    with np.load(out_dir / "digit_3.compare.npz") as arrays:
        assert sorted(arrays.files) == ["adaptgrad", "grad", "grad:ig", "smoothgrad"]


@pytest.mark.parametrize(
    ("argv", "exit_code", "message"),
    [
        (["explain", "-m", "digits_cnn", "missing.png"], 2, "BAD_INPUT: input 'missing.png' does not exist"),
        (["explain", "-m", "no_such_model", DIGIT], 3, "NOT_FOUND: "),
        (["explain", "-m", "digits_cnn", ROWS], 2, "BAD_INPUT: input "),
        (
            ["explain", "-m", "digits_cnn", DIGIT, "--method", "adaptgrad", "--scale", "fixed"],
            2,
            "USAGE: --scale fixed",
        ),
        (["explain", "-m", "digits_cnn", DIGIT, "--target", "42"], 3, "INVALID_ARGUMENT: "),
        (
            ["explain", "-m", "digits_cnn", DIGIT, "--sampler", "antithetic", "--samples", "3"],
            3,
            "INVALID_ARGUMENT: --samples: the antithetic sampler draws pairs",
        ),
        (
            ["compare", "-m", "digits_cnn", DIGIT, "--methods", "grad,nograd"],
            2,
            "USAGE: method: expected one of",
        ),
        (["models", "no_such_model"], 3, "NOT_FOUND: "),
    ],
)
def test_failures_print_code_and_exit_with_the_documented_code(
    server_address: str,
    out_dir: Path,
    capsys: pytest.CaptureFixture[str],
    argv: list[str],
    exit_code: int,
    message: str,
) -> None:
    extra = [] if argv[0] == "models" else ["--out", str(out_dir)]
    code, _, err = _run(capsys, *argv, *extra, "--server", server_address)
    assert code == exit_code
    assert err.startswith(message), err
    assert len(err.strip().splitlines()) == 1


def test_unreachable_server_exits_4(dead_address: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = _run(capsys, "models", "--server", dead_address, "--timeout", "5")
    assert code == 4 and err.startswith(f"UNAVAILABLE: cannot reach the server at {dead_address}")


def test_progress_is_streamed_on_a_terminal(server_address: str) -> None:
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    terminal = Terminal()
    batch = np.random.default_rng(0).random((2, 1, 8, 8)).astype(np.float32)
    with ExplainerClient(server_address) as client:
        results = explain_inputs(
            client, "digits_cnn", batch, method=Method(samples=40), seed=1, progress_stream=terminal
        )
    assert [r.instance_index for r in results] == [0, 1]
    assert "/40 samples" in terminal.getvalue() and terminal.getvalue().endswith("\n")


def test_subprocess_python_m_service_cli(server_address: str, out_dir: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "MOLLIFY_SERVER": server_address}
    completed = subprocess.run(
        [
            sys.executable,
            "-m",
            "service.cli",
            "explain",
            "-m",
            "digits_cnn",
            DIGIT,
            "--samples",
            "8",
            "--seed",
            "3",
            "--out",
            str(out_dir),
            "--json",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr
    [summary] = json.loads(completed.stdout)["explanations"]
    assert summary["seed"] == 3 and Path(summary["files"]["heatmap"]).is_file()
    missing = subprocess.run(
        [sys.executable, "-m", "service.cli", "explain", "-m", "digits_cnn", str(out_dir / "nope.npy")],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )
    assert missing.returncode == 2 and missing.stderr.startswith("BAD_INPUT: ")
