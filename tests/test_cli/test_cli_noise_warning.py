"""`mollify explain` warns when AdaptGrad gave most features no noise (inputs sitting on a bound)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from service.cli import main


def _explain(
    capsys: pytest.CaptureFixture[str], server: str, out: Path, source: Path, method: str
) -> tuple[dict, str]:  # type: ignore[type-arg]
    code = main(
        [
            "explain",
            "-m",
            "digits_cnn",
            str(source),
            "--server",
            server,
            "--out",
            str(out),
            "--samples",
            "4",
            "--seed",
            "1",
            "--method",
            method,
            "--json",
            "--no-figures",
        ]
    )
    captured = capsys.readouterr()
    assert code == 0, captured.err
    [summary] = json.loads(captured.out)["explanations"]
    return summary, captured.err


def test_most_features_on_a_bound_warn_and_suggest_truncated_or_fixed_noise(
    server_address: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    x = np.full((1, 8, 8), 0.5, dtype=np.float32)
    x.reshape(-1)[:48] = 0.0  # 75 % of the pixels on the lower bound
    source = tmp_path / "page.npy"
    np.save(source, x)
    summary, err = _explain(capsys, server_address, tmp_path / "adapt", source, "adaptgrad")
    assert summary["zero_scale_fraction"] == 0.75
    assert "warning:" in err and "75% of the features got no noise" in err
    assert "--method truncgrad" in err and "--method smoothgrad" in err
    summary, err = _explain(capsys, server_address, tmp_path / "smooth", source, "smoothgrad")
    assert summary["zero_scale_fraction"] == 0.0 and err == ""


def test_a_minority_of_features_on_a_bound_does_not_warn(
    server_address: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    x = np.full((1, 8, 8), 0.5, dtype=np.float32)
    x.reshape(-1)[:16] = 1.0
    source = tmp_path / "light.npy"
    np.save(source, x)
    summary, err = _explain(capsys, server_address, tmp_path / "adapt", source, "adaptgrad")
    assert summary["zero_scale_fraction"] == 0.25 and err == ""
