"""``mollify demo --quick`` in a clean folder: it serves, explains, writes the promised figures, stops."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from service.cli import main

PROMISED = (
    "digit_3.smoothgrad.heatmap.png",
    "digit_3.adaptgrad.heatmap.png",
    "digit_3.compare.png",
    "breast_cancer_rows_row1.smoothgrad.bars.png",
    "breast_cancer_rows_row1.adaptgrad.bars.png",
    "breast_cancer_rows_row1.compare.png",
)


def test_quick_demo_in_a_clean_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MOLLIFY_CACHE_DIR", str(tmp_path / "cache"))
    assert main(["demo", "--quick"]) == 0
    out = capsys.readouterr().out
    folder = tmp_path / "mollify-demo"
    for name in PROMISED:
        path = folder / name
        assert path.is_file(), name
        assert str(Path("mollify-demo") / name) in out
        pixels = np.asarray(Image.open(path).convert("RGB"), dtype=np.float64)
        assert pixels.std() > 20, name
    # SmoothGrad samples outside the pixel range, AdaptGrad (almost) never: the paper's point, measured.
    smooth = json.loads((folder / "digit_3.smoothgrad.json").read_text())
    adapt = json.loads((folder / "digit_3.adaptgrad.json").read_text())
    assert adapt["inherent_noise"] < smooth["inherent_noise"]
    assert "Inherent noise" in out
