"""The chaos and soak run (benchmarks/chaos.py) in a short version: mixed valid and malformed requests
from several clients, cancellations, deadline expiries, reloads of a model rewritten mid-way, a
corrupted cache entry and SIGTERM at the end, against a real server process on loopback."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads RSS and threads from /proc")
def test_a_short_chaos_run_finds_no_internal_error_wrong_result_crash_or_leak() -> None:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    run = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "chaos.py"), "--duration", "12", "--clients", "4"],
        capture_output=True,
        text=True,
        timeout=150,
        env=env,
        cwd=ROOT,
    )
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-4000:]
    assert "passed: no INTERNAL" in run.stdout
    rows = [line.rsplit(maxsplit=1) for line in run.stdout.splitlines()]
    counts = {
        row[0].strip(): int(row[1]) for row in rows if len(row) == 2 and row[1].isdigit() and ":" in row[0]
    }
    # Every kind of event really happened.
    for key in (
        "cancel:OK",
        "deadline:DEADLINE_EXCEEDED",
        "explain flip:OK",
        "garbage-bytes:INVALID_ARGUMENT",
    ):
        assert counts.get(key, 0) > 0, (key, run.stdout)
    assert "'cache-corrupted': 0" not in run.stdout and "'reload':" in run.stdout
