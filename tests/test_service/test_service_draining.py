"""``python -m service`` as a real process on SIGTERM: health turns NOT_SERVING while calls are still
served for ``--drain-delay-s``, then the listener closes, in-flight work gets
``MOLLIFY_GRACE_PERIOD_S`` and what is still running or queued ends with UNAVAILABLE, logged as
such, without a traceback; the process exits 0."""

from __future__ import annotations

import os
import queue
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from estimator.method import Method
from models.demo import repository_path
from service.client import ExplainerClient, ExplainProgress, MollifyError
from tests.support import free_port, wait_until

ROOT = Path(__file__).resolve().parents[2]
DRAIN_S = 2.0
GRACE_S = 0.5
DIGIT = np.full((1, 1, 8, 8), 0.5, np.float32)
ENDLESS = 900_000  # samples: minutes of work, so it is still running when the grace period ends


def _queue_depth(metrics_port: int) -> float:
    """The server's ``mollify_queue_depth`` gauge: requests waiting for a computing slot."""
    with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5) as response:
        for line in response.read().decode().splitlines():
            if line.startswith("mollify_queue_depth "):
                return float(line.split()[1])
    return 0.0


def _lines(stream: Any) -> queue.Queue[str]:
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in stream], daemon=True).start()
    return lines


@pytest.mark.skipif(not hasattr(signal, "SIGTERM") or sys.platform == "win32", reason="POSIX signals")
def test_sigterm_drains_then_cuts_off_with_unavailable(tmp_path: Path, graph_cache: Path) -> None:
    metrics_port = free_port()  # the metrics endpoint's flag path needs a number
    models = tmp_path / "models"
    shutil.copytree(repository_path() / "digits_cnn", models / "digits_cnn")
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
        "MOLLIFY_GRACE_PERIOD_S": str(GRACE_S),
        "MOLLIFY_LOG_FORMAT": "text",
    }
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "service",
            "--address",
            "127.0.0.1:0",
            "--model-repository",
            str(models),
            "--cache-dir",
            str(graph_cache),
            "--device",
            "cpu",
            "--intra-op-threads",
            "1",
            "--memory-budget-bytes",
            "512KiB",
            "--max-evaluations",
            "2000000",
            "--max-concurrent-requests",
            "1",
            "--drain-delay-s",
            str(DRAIN_S),
            "--metrics-port",
            str(metrics_port),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=tmp_path,
    )
    try:
        stdout, stderr = _lines(process.stdout), _lines(process.stderr)
        banner = stdout.get(timeout=60)
        assert banner.startswith("listening on 127.0.0.1:"), banner
        address = banner.split()[2]
        with ExplainerClient(address, timeout=60) as client:
            assert client.health() == "SERVING"
            running = client.explain_stream("digits_cnn", DIGIT, method=Method(samples=ENDLESS), seed=1)
            assert isinstance(next(running), ExplainProgress)
            queued: dict[str, Any] = {}

            def wait_in_queue() -> None:  # the only slot is taken: this one waits in the queue
                try:
                    queued["second"] = client.explain(
                        "digits_cnn", DIGIT, method=Method(samples=ENDLESS), seed=2
                    )
                except MollifyError as error:
                    queued["second"] = error

            second = threading.Thread(target=wait_in_queue, daemon=True)
            second.start()
            wait_until(
                lambda: _queue_depth(metrics_port) == 1, 10, "the second request to queue", interval=0.02
            )

            process.send_signal(signal.SIGTERM)
            signalled = time.monotonic()
            wait_until(
                lambda: client.health() == "NOT_SERVING", 5, "health to turn NOT_SERVING", interval=0.02
            )
            assert client.health("digits_cnn") == "NOT_SERVING"
            # Still reachable while draining: a listing is answered.
            assert [m.name for m in client.list_models(timeout=5)] == ["digits_cnn"]
            assert client.health() == "NOT_SERVING"  # still draining: answered, not yet closed

            with pytest.raises(MollifyError) as cut_off:
                list(running)
            ended = time.monotonic() - signalled
            second.join(15)
            with pytest.raises(MollifyError) as closed:
                client.list_models(timeout=5)
        assert process.wait(timeout=30) == 0

        assert cut_off.value.code == "UNAVAILABLE"
        assert (
            "shutdown grace period (server setting --grace-period-s / MOLLIFY_GRACE_PERIOD_S)"
            in cut_off.value.message
        )
        assert ended >= DRAIN_S + GRACE_S  # the drain delay and the grace were granted
        assert isinstance(queued["second"], MollifyError) and queued["second"].code == "UNAVAILABLE"
        assert "while the request was queued" in queued["second"].message
        assert closed.value.code == "UNAVAILABLE"
        logged = "".join(stderr.queue)
        assert f"request_id={cut_off.value.request_id} method=ExplainStream code=UNAVAILABLE" in logged
        assert f"request_id={queued['second'].request_id} method=Explain code=UNAVAILABLE" in logged
        assert "Traceback" not in logged and "cannot schedule new futures" not in logged, logged
        assert "code=CANCELLED" not in logged and "code=INTERNAL" not in logged, logged
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
