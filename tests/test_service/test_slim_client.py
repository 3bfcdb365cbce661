"""The Python client needs only grpcio, protobuf and numpy: no onnxruntime, onnx, scipy or torch.

A client process that cannot import any of the heavy packages explains against a real server.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from service.server import MollifyServer

ROOT = Path(__file__).resolve().parents[2]
HEAVY = (
    "scipy",
    "onnxruntime",
    "onnx",
    "matplotlib",
    "PIL",
    "starlette",
    "uvicorn",
    "torch",
    "prometheus_client",
    "pyarrow",
    "tokenizers",
    "ray",
    "pandas",
)

SCRIPT = """
import sys
heavy = set(sys.argv[2].split(","))

class Refuse:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in heavy:
            raise ModuleNotFoundError(f"No module named {name!r} (a slim client)", name=name)
        return None

sys.meta_path.insert(0, Refuse())
import numpy as np
from estimator.method import Method
from service.client import ExplainerClient

with ExplainerClient(sys.argv[1], timeout=60) as client:
    [info] = [m for m in client.list_models() if m.name == "digits_cnn"]
    [result] = client.explain("digits_cnn", np.full((1, 1, 8, 8), 0.5, np.float32), method=Method(samples=4), seed=1)
    loaded = sorted(name for name in sys.modules if name.split(".")[0] in heavy)
    import estimator
    try:
        estimator.explain
    except ImportError as err:
        needs = "needs scipy" in str(err)
    print(info.name, result.samples, result.attribution.shape, loaded, needs)
"""


def test_the_client_explains_without_the_server_side_packages(demo_server: MollifyServer) -> None:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    run = subprocess.run(
        [sys.executable, "-c", SCRIPT, f"127.0.0.1:{demo_server.port}", ",".join(HEAVY)],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        cwd=ROOT,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    # The estimator itself says what it lacks when asked for.
    assert run.stdout.strip() == "digits_cnn 4 (1, 8, 8) [] True"
