"""HTTP (KServe v1 explain) vs gRPC end to end, same server process, same N and seed.

    PYTHONPATH=. python benchmarks/http_vs_grpc.py [--models resnet18,digits_cnn] [--samples 50] [--repeats 5]

For each model (random weights, exported from PyTorch as ``benchmarks/service.py`` does) one server
runs as a subprocess with both front ends; this script times, as the fastest of ``--repeats``
rounds taken in alternating turns (the median beside it), one SmoothGrad explanation (N samples,
α = 0.2, one instance, the same seed) through:

- ``grpc``: ``ExplainerClient.explain`` (binary tensors);
- ``http``: ``POST /v1/models/{name}:explain`` with the instance as nested JSON lists, the response
  parsed back into a float32 array (what a KServe client does).

It checks that both return bitwise the same attribution and prints one table with the ratio
http / grpc (the floor for ResNet-18: at most 1.2).
"""

from __future__ import annotations

import sys
from pathlib import Path

# Run as a script, this file's folder comes first on sys.path and its name would shadow the
# standard library's `http` (and `service.py` the project's package): drop the folder first, and
# put the repository root first (benchmarks/service.py is imported as `benchmarks.service`).
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]
_ROOT = Path(__file__).resolve().parents[1]
if str(_ROOT) not in sys.path:
    sys.path.insert(0, str(_ROOT))

import argparse  # noqa: E402
import http.client  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import queue  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable, Sequence  # noqa: E402
from types import ModuleType  # noqa: E402

import numpy as np  # noqa: E402

from estimator.method import Method  # noqa: E402
from service.client import ExplainerClient  # noqa: E402

FLOOR_RESNET = 1.2
ALPHA = 0.2
SEED = 7


def _service_benchmark() -> ModuleType:
    """``benchmarks/service.py`` (its model zoo and export)."""
    from benchmarks import service

    return service


class _Server:
    """``python -m service`` with gRPC and HTTP on free ports."""

    def __init__(self, repository: Path, cache: Path) -> None:
        args = [
            sys.executable,
            "-m",
            "service",
            "--address",
            "127.0.0.1:0",
            "--http-address",
            "127.0.0.1:0",
            "--model-repository",
            str(repository),
            "--cache-dir",
            str(cache),
            "--device",
            "cpu",
            "--max-concurrent-requests",
            "1",
            "--max-evaluations",
            "10000000",
            "--max-message-bytes",
            "256MiB",
            "--log-level",
            "WARNING",
        ]
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(_ROOT), os.environ.get("PYTHONPATH", "")])}
        self.process = subprocess.Popen(args, stdout=subprocess.PIPE, text=True, env=env)
        lines: queue.Queue[str] = queue.Queue()
        threading.Thread(
            target=lambda: [lines.put(line) for line in self.process.stdout or ()], daemon=True
        ).start()
        banner = lines.get(timeout=600)
        if not banner.startswith("listening on"):
            raise RuntimeError(f"server did not start: {banner}")
        self.address = banner.split()[2]
        self.http_port = int(banner.split("http ")[1].split(")")[0].rsplit(":", 1)[1])

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=60)


def _http_explain(port: int, model: str, x: np.ndarray, samples: int) -> np.ndarray:
    body = json.dumps(
        {"instances": x.tolist(), "parameters": {"samples": samples, "alpha": ALPHA, "seed": SEED}}
    ).encode()
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
    try:
        connection.request(
            "POST", f"/v1/models/{model}:explain", body=body, headers={"content-type": "application/json"}
        )
        response = connection.getresponse()
        document = json.loads(response.read())
    finally:
        connection.close()
    if response.status != 200:
        raise RuntimeError(f"HTTP {response.status}: {document}")
    return np.asarray(document["explanations"][0]["attribution"], dtype=np.float32)


def _best(functions: dict[str, Callable[[], object]], repeats: int) -> dict[str, tuple[float, float]]:
    times: dict[str, list[float]] = {name: [] for name in functions}
    for _ in range(repeats):
        for name, function in functions.items():
            time.sleep(0.1)
            start = time.perf_counter()
            function()
            times[name].append(time.perf_counter() - start)
    return {name: (min(values), statistics.median(values)) for name, values in times.items()}


def _measure(
    server: _Server, name: str, x: np.ndarray, samples: int, repeats: int
) -> tuple[bool, dict[str, tuple[float, float]]]:
    """Whether both front ends return bitwise the same attribution, and their timings."""
    method = Method(samples=samples, alpha=ALPHA)
    with ExplainerClient(server.address) as client:

        def grpc_call() -> np.ndarray:
            return client.explain(name, x, method=method, seed=SEED)[0].attribution

        def http_call() -> np.ndarray:
            return _http_explain(server.http_port, name, x, samples)

        same = grpc_call().tobytes() == http_call().tobytes()  # also warms both paths up
        return same, _best({"grpc": grpc_call, "http": http_call}, repeats)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--models", default="resnet18,digits_cnn")
    parser.add_argument("--samples", type=int, default=50)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    bench = _service_benchmark()
    cases = bench._cases(bench._zoo())
    rows = []
    failed = False
    with tempfile.TemporaryDirectory() as workdir:
        for name in args.models.split(","):
            case = cases[name]
            repository, cache = Path(workdir) / name / "models", Path(workdir) / name / "cache"
            _, x = bench._prepare(case, repository, seed=0)
            server = _Server(repository, cache)
            try:
                same, timings = _measure(server, name, x, args.samples, args.repeats)
            finally:
                server.stop()
            ratio = timings["http"][0] / timings["grpc"][0]
            floor = ratio <= FLOOR_RESNET if name == "resnet18" else True
            failed |= not (same and floor)
            rows.append(
                (case.label, timings["grpc"], timings["http"], ratio, same, floor, name == "resnet18")
            )
    print(
        f"N = {args.samples}, alpha = {ALPHA}, seed = {SEED}, one instance; fastest of {args.repeats} "
        f"(median); {os.cpu_count()} CPUs"
    )
    print(f"{'model':<28} {'gRPC e2e':>20} {'HTTP e2e':>20} {'HTTP/gRPC':>10}  bitwise equal")
    for label, grpc_t, http_t, ratio, same, floor, checked in rows:
        verdict = f" (floor ≤ {FLOOR_RESNET}: {'ok' if floor else 'MISSED'})" if checked else ""
        print(
            f"{label:<28} {grpc_t[0] * 1e3:>9.1f} ({grpc_t[1] * 1e3:>6.1f}) ms "
            f"{http_t[0] * 1e3:>9.1f} ({http_t[1] * 1e3:>6.1f}) ms {ratio:>9.3f}{verdict}  {same}"
        )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
