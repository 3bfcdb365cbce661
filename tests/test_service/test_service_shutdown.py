"""``python -m service`` (= ``mollify serve``) as a real process: SIGHUP reloads the repository,
SIGTERM lets the in-flight request finish, refuses new ones, and exits 0."""

from __future__ import annotations

import os
import queue
import shutil
import signal
import subprocess
import sys
import threading
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from estimator.method import Method
from models.demo import repository_path
from service.client import ExplainerClient, ExplainProgress, MollifyError
from tests.support import free_port, wait_until

ROOT = Path(__file__).resolve().parents[2]
SAMPLES = 6000


def _lines(stream: object) -> queue.Queue[str]:
    lines: queue.Queue[str] = queue.Queue()

    def pump() -> None:
        for line in stream:  # type: ignore[attr-defined]
            lines.put(line)

    threading.Thread(target=pump, daemon=True).start()
    return lines


@pytest.mark.skipif(not hasattr(signal, "SIGHUP"), reason="POSIX signals")
def test_sighup_reloads_and_sigterm_drains(tmp_path: Path, graph_cache: Path) -> None:
    metrics_port = free_port()  # the metrics endpoint's flag path needs a number
    models = tmp_path / "models"
    shutil.copytree(repository_path() / "digits_cnn", models / "digits_cnn")
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
        "MOLLIFY_GRACE_PERIOD_S": "30",
        "MOLLIFY_LOG_FORMAT": "text",
        "MOLLIFY_DRAIN_DELAY_S": "0",
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
            "1000000",
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
        port = int(banner.split()[2].rsplit(":", 1)[1])
        with ExplainerClient(f"127.0.0.1:{port}", timeout=60) as client:
            assert [m.name for m in client.list_models()] == ["digits_cnn"]
            with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10) as response:
                assert 'mollify_requests_total{code="OK",method="ListModels"} 1.0' in response.read().decode()

            shutil.copytree(models / "digits_cnn", models / "digits_copy")
            process.send_signal(signal.SIGHUP)
            wait_until(
                lambda: "digits_copy" in {m.name for m in client.list_models() if m.ready},
                30,
                "the SIGHUP reload",
                interval=0.05,
            )

            x = np.full((1, 1, 8, 8), 0.5, np.float32)
            stream = client.explain_stream("digits_cnn", x, method=Method(samples=SAMPLES), seed=3)
            first = next(stream)
            assert isinstance(first, ExplainProgress) and first.samples_done < SAMPLES
            process.send_signal(signal.SIGTERM)
            wait_until(
                lambda: any("listener closed" in line for line in list(stderr.queue)),
                10,
                "the listener to close on SIGTERM",
                interval=0.05,
            )
            with pytest.raises(MollifyError) as refused:
                client.list_models(timeout=5)
            assert refused.value.code == "UNAVAILABLE"
            *_, final = list(stream)
            assert isinstance(final, list) and final[0].samples == SAMPLES
        assert process.wait(timeout=30) == 0
        logged = "".join(stderr.queue)
        assert "serving" in logged and "code=OK" in logged
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
