"""Rows per second of ``mollify batch``: the local engine vs the Ray engine vs a plain client loop.

    PYTHONPATH=. python benchmarks/batch.py [--rows 100000] [--digits-rows 20000] [--samples 50]
                                           [--workers 1,2] [--engines local,ray,client] [--block-rows 512]

For the bundled breast-cancer MLP and digits CNN (inputs drawn uniformly inside each model's input
domain, saved as ``.npy``), SmoothGrad with N samples, with 1 and 2 workers:

- ``local``: ``run_batch`` on the local engine (worker processes, one session each);
- ``ray``: ``run_batch`` on a local Ray instance of that many CPUs (an actor pool of that many actors;
  starting the instance is not timed, starting the actors is);
- ``client``: a server in this process with that many computing slots (one ONNX Runtime thread
  each) and as many threads, each a plain Python loop of ``ExplainerClient.explain`` calls of 64
  rows (the server's max-instances).

Each number includes everything a user waits for (worker start, model load, output writing), so
small ``--rows`` understate steady-state throughput.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import threading
import time
from pathlib import Path

# Run as a script, this file's folder comes first on sys.path and benchmarks/service.py would shadow
# the `service` package: drop the folder before importing the project.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import numpy as np  # noqa: E402

from estimator.method import Method  # noqa: E402
from models.demo import repository_path  # noqa: E402
from service.batch.job import BatchJob, run_batch  # noqa: E402
from service.batch.model import BatchModel, resolve_model  # noqa: E402
from service.batch.sources import open_source  # noqa: E402
from service.batch.work import WorkSpec  # noqa: E402


def dataset(model: BatchModel, rows: int, folder: Path) -> Path:
    rng = np.random.default_rng(0)
    low, high = model.lower.astype(np.float64), model.upper.astype(np.float64)
    data = (low + (high - low) * rng.uniform(size=(rows, *model.input_shape))).astype(np.float32)
    path = folder / f"{model.name}.npy"
    np.save(path, data)
    return path


def batch_rate(
    model: BatchModel, data: Path, engine: str, workers: int, samples: int, block_rows: int, out: Path
) -> float:
    spec = WorkSpec(
        model=model, source=open_source(data, model), method=Method(samples=samples), target=None, seed=1
    )
    started = time.perf_counter()
    summary = run_batch(BatchJob(spec, out, block_rows=block_rows, engine=engine, workers=workers))
    return summary.rows / (time.perf_counter() - started)


def client_rate(name: str, data: Path, workers: int, samples: int, cache: Path) -> float:
    from service.client import ExplainerClient
    from service.server import create_server
    from service.settings import Settings

    settings = Settings(
        address="127.0.0.1:0",
        model_repository=repository_path(),
        cache_dir=cache,
        device="cpu",
        intra_op_threads=1,
        max_concurrent_requests=workers,
        log_level="WARNING",
        metrics_port=0,
    )
    server, port = create_server(settings)
    server.start()
    inputs = np.load(data, mmap_mode="r")
    batches = [slice(i, min(i + 64, len(inputs))) for i in range(0, len(inputs), 64)]

    def loop(part: list[slice]) -> None:
        with ExplainerClient(f"127.0.0.1:{port}", timeout=600) as client:
            for rows in part:
                client.explain(name, np.asarray(inputs[rows]), method=Method(samples=samples), seed=1)

    try:
        started = time.perf_counter()
        threads = [threading.Thread(target=loop, args=(batches[k::workers],)) for k in range(workers)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        return len(inputs) / (time.perf_counter() - started)
    finally:
        server.stop(0).wait()


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=100_000, help="breast-cancer MLP rows (default: 100000)")
    parser.add_argument("--digits-rows", type=int, default=20_000, help="digits CNN images (default: 20000)")
    parser.add_argument("--samples", type=int, default=50, help="SmoothGrad samples N (default: 50)")
    parser.add_argument("--workers", default="1,2", help="worker counts (default: 1,2)")
    parser.add_argument(
        "--engines", default="local,ray,client", help="what to time (default: local,ray,client)"
    )
    parser.add_argument("--block-rows", type=int, default=512, help="rows per block (default: 512)")
    args = parser.parse_args()
    workers = [int(w) for w in args.workers.split(",")]
    engines = args.engines.split(",")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        cache = root / "cache"
        print(f"{'model':<18} {'rows':>7} {'engine':<7} {'workers':>7} {'rows/s':>10}")
        for name, rows in (("breast_cancer_mlp", args.rows), ("digits_cnn", args.digits_rows)):
            model = resolve_model(name, repository=repository_path(), cache_dir=cache)
            data = dataset(model, rows, root)
            for engine in engines:
                for count in workers:
                    out = root / f"out-{name}-{engine}-{count}"
                    if engine == "client":
                        rate = client_rate(name, data, count, args.samples, cache)
                    elif engine == "ray":
                        # Started per measurement (not timed) and stopped after: an idle Ray instance's
                        # processes would take CPU from the other engines' measurements.
                        import ray

                        ray.init(
                            num_cpus=count,
                            include_dashboard=False,
                            logging_level="ERROR",
                            log_to_driver=False,
                        )
                        try:
                            rate = batch_rate(model, data, engine, count, args.samples, args.block_rows, out)
                        finally:
                            ray.shutdown()
                    else:
                        rate = batch_rate(model, data, engine, count, args.samples, args.block_rows, out)
                    print(f"{name:<18} {rows:>7} {engine:<7} {count:>7} {rate:>10.1f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
