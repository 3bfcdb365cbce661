"""The real ``mollify`` process: one ``CODE: message`` line and the documented exit code when the
server cannot listen, and a quiet exit when the reader of its stdout goes away (``| head``)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
ENV = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO_ROOT), os.environ.get("PYTHONPATH", "")])}


def _mollify(*argv: str, **kwargs: object) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "service.cli", *argv], text=True, env=ENV, stderr=subprocess.PIPE, **kwargs
    )  # type: ignore[call-overload]


@pytest.fixture()
def busy_port() -> Iterator[int]:
    """A loopback port another process listens on."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        yield int(listener.getsockname()[1])


def test_serve_on_a_port_in_use_prints_one_line_and_exits_2(busy_port: int, tmp_path: Path) -> None:
    process = _mollify(
        "serve", "--address", f"127.0.0.1:{busy_port}", "--cache-dir", str(tmp_path), stdout=subprocess.PIPE
    )
    stdout, stderr = process.communicate(timeout=120)
    assert process.returncode == 2, stderr
    assert stdout == ""
    assert stderr.splitlines() == [
        f"UNAVAILABLE: cannot listen on 127.0.0.1:{busy_port}: the address is already in use "
        "(another server listens there); choose another --address / MOLLIFY_ADDRESS"
    ]


@pytest.mark.parametrize("instances", [1, 40], ids=["output-within-the-buffer", "output-beyond-the-buffer"])
def test_explain_json_into_a_closed_pipe_exits_quietly(
    server_address: str, tmp_path: Path, instances: int
) -> None:
    inputs = tmp_path / "digits.npy"
    np.save(inputs, np.random.default_rng(0).random((instances, 1, 8, 8)).astype(np.float32))
    process = _mollify(
        "explain",
        "--model",
        "digits_cnn",
        "--json",
        "--no-figures",
        "--samples",
        "4",
        "--out",
        str(tmp_path / "out"),
        "--server",
        server_address,
        str(inputs),
        stdout=subprocess.PIPE,
    )
    assert process.stdout is not None
    process.stdout.close()  # the reader is gone before anything is written, as after `| head -c 0`
    stderr = process.stderr.read() if process.stderr else ""
    assert process.wait(timeout=120) == 141, stderr
    assert "Traceback" not in stderr and "BrokenPipe" not in stderr and "INTERNAL" not in stderr, stderr
