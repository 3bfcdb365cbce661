"""deploy/gpu/transfer.py (split, plan, join with checksums) and benchmarks/gpu.py in quick CPU mode."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

from tests.support import load_script

ROOT = Path(__file__).resolve().parents[1]


def _transfer() -> ModuleType:
    return load_script("deploy/gpu/transfer.py")


def test_split_plan_join_round_trip_under_the_piece_limit(tmp_path: Path) -> None:
    transfer = _transfer()
    wheel = tmp_path / "dummy-1.0-py3-none-any.whl"
    wheel.write_bytes(bytes(range(256)) * 4000 + b"tail")  # 1,024,004 bytes
    other = tmp_path / "small.whl"
    other.write_bytes(b"x" * 10)
    out = tmp_path / "transfer"
    manifest = transfer.split([wheel, other], out, 300_000)
    pieces = sorted((out / "pieces").iterdir())
    assert len(pieces) == 4 + 1 and all(p.stat().st_size <= 300_000 for p in pieces)
    assert json.loads((out / "manifest.json").read_text()) == manifest
    steps = transfer.plan(out)
    assert len(steps) == 5 and steps[0].startswith(str(out / "manifest.json"))
    assert transfer.join(out, tmp_path / "joined") == []
    assert (tmp_path / "joined" / wheel.name).read_bytes() == wheel.read_bytes()
    assert (tmp_path / "joined" / other.name).read_bytes() == other.read_bytes()


def test_join_names_missing_and_damaged_pieces(tmp_path: Path) -> None:
    transfer = _transfer()
    wheel = tmp_path / "dummy.whl"
    wheel.write_bytes(b"0123456789" * 100)
    out = tmp_path / "transfer"
    transfer.split([wheel], out, 300)
    (out / "pieces" / "dummy.whl.part001").unlink()
    damaged = out / "pieces" / "dummy.whl.part002"
    damaged.write_bytes(b"X" + damaged.read_bytes()[1:])
    problems = transfer.join(out, tmp_path / "joined")
    assert problems == [
        "dummy.whl.part001: missing",
        "dummy.whl.part002: damaged (size or SHA-256 differs from the manifest)",
    ]
    assert not (tmp_path / "joined" / "dummy.whl").exists()
    result = subprocess.run(
        [sys.executable, str(ROOT / "deploy/gpu/transfer.py"), "join", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1 and "part001: missing" in result.stderr


def test_the_transfer_folder_is_git_ignored() -> None:
    result = subprocess.run(
        ["git", "check-ignore", "-q", ".gpu-transfer/pieces/x.part000"], cwd=ROOT, timeout=30
    )
    assert result.returncode == 0


@pytest.mark.timeout(300)
def test_gpu_benchmark_runs_quick_on_cpu() -> None:
    result = subprocess.run(
        [
            sys.executable,
            str(ROOT / "benchmarks/gpu.py"),
            "--device",
            "cpu",
            "--quick",
            "--samples",
            "4",
            "--models",
            "resnet18,resnet50",
        ],
        capture_output=True,
        text=True,
        timeout=280,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    table = result.stdout.split("device cpu (CPU)")[1]
    for model in ("resnet18", "resnet50"):
        for what in ("mollify", "grpc", "grpc x4", "raw", "ort fwd", "captum"):
            line = next(line for line in table.splitlines() if line.startswith(model) and f" {what} " in line)
            best = float(line.split()[3 if " " not in what else 4])
            assert best > 0, line
    assert "mollify/raw" in table
