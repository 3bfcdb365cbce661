"""The explanation service end to end vs the work it wraps.

    PYTHONPATH=. python benchmarks/service.py [--models resnet18,digits_cnn] [--samples 50] [--repeats 5]
                                             [--clients 1,4,16] [--rss-samples 1000] [--threads N]

For each model (random weights, exported from PyTorch here) a server runs as a subprocess
(``python -m service``) and this script measures, as the fastest of repeats timed in rotating turns (the
machine is shared: the minimum is the measurement least disturbed by other processes; medians are
printed beside it). The small model's measurement is the mean of 20 back-to-back calls (steady
state); its isolated single calls after a pause, which include waking every sleeping thread of
both processes, are printed too:

- ``e2e``: SmoothGrad (N samples, α = 0.2) of one instance through ``ExplainerClient.explain`` over gRPC;
- ``raw``: the gradient-graph runs the estimator does for it (N + 1 rows: the clean pass and N noisy
  copies, in the same model calls), called directly on a ``GradientSession`` of the same graph;
- ``direct``: ``estimator.explain`` in this process on that session (raw + the estimator's own work);
- ``captum``: ``NoiseTunnel(Saliency)`` with the same N and σ in PyTorch;
- ``forward``: the ONNX Runtime forward pass of N inputs.

Then the aggregate throughput (explanations/s) with 1, 4 and 16 concurrent clients, and the
server's peak RSS (VmHWM, reset before each phase through /proc/PID/clear_refs) during N-sample
and ``--rss-samples``-sample explanations. Floors (the task's acceptance criteria) are checked
and printed: e2e ≤ 1.05 × raw and ≤ 0.6 × Captum on ResNet-18; small model e2e ≤ raw + 1 ms;
peak RSS at N = 1000 ≤ 1.2 × at N = 50.
"""

from __future__ import annotations

import argparse
import os
import queue
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType

# Run as a script, this file's folder comes first on sys.path and its name would shadow the
# `service` package: drop the folder before importing the project, and put the repository root
# first (the test zoo is imported as `tests.test_models.zoo_modules`).
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]
_ROOT = Path(__file__).resolve().parents[1]
if str(_ROOT) not in sys.path:
    sys.path.insert(0, str(_ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from estimator import explain  # noqa: E402
from estimator.method import Method  # noqa: E402
from models.config import ModelConfig  # noqa: E402
from models.export import export_torch_onnx  # noqa: E402
from models.runtime import ForwardSession, GradientSession  # noqa: E402
from service.client import ExplainerClient  # noqa: E402
from service.graphs import cached_gradient_graph  # noqa: E402
from service.settings import Settings, default_concurrency  # noqa: E402

FLOOR_VS_RAW = 1.05
FLOOR_VS_CAPTUM = 0.6
FLOOR_SMALL_OVERHEAD_S = 0.001
FLOOR_RSS = 1.2
LOWER, UPPER = -1.0, 1.0
ALPHA = 0.2


def _zoo() -> ModuleType:
    """The hand-written reference architectures of the test zoo (torchvision does not import here)."""
    from tests.test_models import zoo_modules

    return zoo_modules


@dataclass(frozen=True)
class Case:
    name: str
    label: str
    module: Callable[[], torch.nn.Module]
    instance_shape: tuple[int, ...]
    repeat_factor: int = 1  # small models repeat more: a millisecond is easily disturbed
    burst: int = 1  # calls timed back to back per measurement (their mean is the measurement)


def _cases(zoo: ModuleType) -> dict[str, Case]:
    from models.demo.build import digits_cnn_module

    return {
        "resnet18": Case("resnet18", "ResNet-18 layout 3x224x224", zoo.ResNet18, (3, 224, 224)),
        "digits_cnn": Case(
            "digits_cnn", "digits CNN 1x8x8", digits_cnn_module, (1, 8, 8), repeat_factor=4, burst=20
        ),
    }


@dataclass
class Result:
    label: str
    samples: int
    chunk_rows: int = 0
    medians: dict[str, float] = field(default_factory=dict)
    isolated: dict[str, float] = field(default_factory=dict)
    e2e_s: float = float("nan")
    raw_s: float = float("nan")
    direct_s: float = float("nan")
    captum_s: float = float("nan")
    forward_s: float = float("nan")
    throughput: dict[int, float] = field(default_factory=dict)
    refused: dict[int, int] = field(default_factory=dict)
    rss: dict[int, int] = field(default_factory=dict)
    calls: list[int] = field(default_factory=list)
    bytes_per_sample: int = 0


class _Recorder:
    """A GradientModel proxy that records the batch size of every call."""

    def __init__(self, model: GradientSession) -> None:
        self.model = model
        self.batches: list[int] = []

    def __getattr__(self, name: str) -> object:
        return getattr(self.model, name)

    def __call__(self, inputs: np.ndarray, cotangents: np.ndarray, weight_overrides: object = None) -> object:
        self.batches.append(len(inputs))
        return self.model(inputs, cotangents, weight_overrides)  # type: ignore[arg-type]


class ServerProcess:
    """``python -m service`` on a free port; ``peak_rss`` reads its VmHWM, ``reset_peak`` clears it."""

    def __init__(self, repository: Path, cache: Path, threads: int, concurrency: int, budget: int) -> None:
        args = [
            sys.executable,
            "-m",
            "service",
            "--address",
            "127.0.0.1:0",
            "--model-repository",
            str(repository),
            "--cache-dir",
            str(cache),
            "--device",
            "cpu",
            "--max-concurrent-requests",
            str(concurrency),
            "--max-queued-requests",
            "32",
            "--max-evaluations",
            "10000000",
            "--log-level",
            "WARNING",
        ]
        args += ["--intra-op-threads", str(threads), "--memory-budget-bytes", str(budget)]
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

    def reset_peak(self) -> bool:
        try:
            Path(f"/proc/{self.process.pid}/clear_refs").write_text("5")
            return True
        except OSError:
            return False

    def peak_rss(self) -> int:
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
        return 0

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=60)


def _timed(function: Callable[[], object], calls: int = 1) -> float:
    """Mean seconds of ``calls`` back-to-back calls of ``function``, after a pause.

    The pause lets the worker threads of the previous measurement (ONNX Runtime's and torch's spin
    after each run) go idle, so that they do not take cores from this one. It also leaves every
    thread of this one asleep: a single call then includes waking them (the isolated latency);
    back-to-back calls measure the steady state of a server with work arriving.
    """
    time.sleep(0.1)
    start = time.perf_counter()
    for _ in range(calls):
        function()
    return (time.perf_counter() - start) / calls


def _prepare(case: Case, folder: Path, seed: int) -> tuple[torch.nn.Module, np.ndarray]:
    zoo = _zoo()
    module = zoo.init_module(case.module(), seed)
    x = zoo.random_input((1, *case.instance_shape), seed + 1).numpy()
    original = export_torch_onnx(module, torch.from_numpy(np.repeat(x, 2, axis=0)))
    target = folder / case.name
    target.mkdir(parents=True)
    (target / "model.onnx").write_bytes(original.SerializeToString())
    ModelConfig(
        name=case.name,
        input_name="input",
        input_shape=case.instance_shape,
        explained_tensor="logits",
        lower=LOWER,
        upper=UPPER,
        description=case.label,
    ).save(target)
    return module, x


def measure(case: Case, args: argparse.Namespace, workdir: Path) -> Result:
    repository, cache = workdir / "models", workdir / "cache"
    module, x = _prepare(case, repository, seed=0)
    method = Method(samples=args.samples, alpha=ALPHA)
    result = Result(case.label, args.samples)
    server = ServerProcess(
        repository, cache, args.threads, args.concurrency, args.memory_budget
    )  # resolved in main()
    try:
        with ExplainerClient(server.address, timeout=60) as client:
            info = client.get_model(case.name)
        if not info.ready:
            raise RuntimeError(f"the server could not load {case.name}: {info.error}")
        # The server built this graph (or finds it in the shared cache, by the same content key).
        model_bytes = (repository / case.name / "model.onnx").read_bytes()
        graph = cached_gradient_graph(model_bytes, "input", case.instance_shape, "logits", cache)
        session = GradientSession(graph, input_name="input", device="cpu", intra_op_threads=args.threads)
        forward = ForwardSession(
            str(repository / case.name / "model.onnx"), device="cpu", intra_op_threads=args.threads
        )
        # Record the model calls the estimator makes under the server's memory budget, so that the
        # raw runs repeat exactly them: the clean pass, then the noisy rows in the same chunks.
        recorder = _Recorder(session)
        budget = args.memory_budget
        reference = explain(
            recorder, x[0], method, lower=LOWER, upper=UPPER, seed=1, memory_budget_bytes=budget
        )
        result.chunk_rows = int(reference.extras["chunk_rows"])
        result.calls = list(recorder.batches)
        result.bytes_per_sample = session.bytes_per_sample
        rows = np.repeat(x, sum(result.calls), axis=0)
        rows[1:] += (
            np.random.default_rng(2).normal(0, ALPHA * (UPPER - LOWER), rows[1:].shape).astype(np.float32)
        )
        cotangents = np.zeros((len(rows), *session.output_shape), np.float32)
        cotangents[:, int(np.argmax(reference.outputs))] = 1.0
        starts = np.cumsum([0, *result.calls])
        batch = np.repeat(x, args.samples, axis=0)
        captum = _captum(
            module,
            torch.from_numpy(x),
            args.samples,
            ALPHA * (UPPER - LOWER),
            int(np.argmax(reference.outputs)),
        )

        with ExplainerClient(server.address, timeout=600) as client:

            def e2e() -> object:
                return client.explain(case.name, x, method=method, seed=1)

            def raw() -> object:
                return [
                    session(rows[a:b], cotangents[a:b]) for a, b in zip(starts[:-1], starts[1:], strict=True)
                ]

            def direct() -> object:
                return explain(
                    session, x[0], method, lower=LOWER, upper=UPPER, seed=1, memory_budget_bytes=budget
                )

            print("  latency: e2e, raw, direct, Captum, forward in turns", flush=True)
            functions = {
                "e2e": e2e,
                "raw": raw,
                "direct": direct,
                "captum": captum,
                "forward": lambda: forward.run(batch),
            }
            timings: dict[str, list[float]] = {name: [] for name in functions}
            for function in functions.values():
                function()
            names = list(functions)
            isolated: dict[str, list[float]] = {name: [] for name in functions}
            for repeat in range(args.repeats * case.repeat_factor):
                # Rotate the order so that no measurement always follows the same neighbour.
                for name in names[repeat % len(names) :] + names[: repeat % len(names)]:
                    timings[name].append(_timed(functions[name], case.burst))
                    if case.burst > 1:
                        isolated[name].append(_timed(functions[name]))
            if case.burst > 1:
                result.isolated = {k: min(v) for k, v in isolated.items()}
            result.e2e_s, result.raw_s, result.direct_s, result.captum_s, result.forward_s = (
                min(timings[k]) for k in functions
            )
            result.medians = {k: statistics.median(v) for k, v in timings.items()}

            for clients in args.clients:
                print(f"  throughput: {clients} clients", flush=True)
                result.throughput[clients], result.refused[clients] = _throughput(
                    server.address, case.name, x, method, clients, args.requests_per_client
                )

            if args.rss_samples:
                for samples in (args.samples, args.rss_samples):
                    print(f"  peak RSS: N = {samples}", flush=True)
                    if not server.reset_peak():
                        print("cannot reset VmHWM (no /proc/PID/clear_refs): peak RSS includes start-up")
                    client.explain(case.name, x, method=Method(samples=samples, alpha=ALPHA), seed=3)
                    result.rss[samples] = server.peak_rss()
    finally:
        server.stop()
    return result


def _captum(
    module: torch.nn.Module, x: torch.Tensor, samples: int, sigma: float, target: int
) -> Callable[[], object]:
    from captum.attr import NoiseTunnel, Saliency

    tunnel = NoiseTunnel(Saliency(module))

    def run() -> object:
        return tunnel.attribute(
            x, nt_type="smoothgrad", nt_samples=samples, stdevs=sigma, target=target, abs=False
        )

    return run


def _throughput(
    address: str, model: str, x: np.ndarray, method: Method, clients: int, requests: int
) -> tuple[float, int]:
    """Explanations per second with ``clients`` concurrent clients of ``requests`` calls each."""
    refused = 0

    def one_client(_: int) -> int:
        nonlocal refused
        done = 0
        with ExplainerClient(address, timeout=600) as client:
            for _ in range(requests):
                try:
                    client.explain(model, x, method=method, seed=4)
                    done += 1
                except Exception:  # noqa: BLE001 - a refusal under load is counted, not fatal
                    refused += 1
        return done

    start = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        done = sum(pool.map(one_client, range(clients)))
    return done / (time.perf_counter() - start), refused


def _verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def report(results: Sequence[Result], args: argparse.Namespace) -> int:
    print(
        f"\nSmoothGrad N = {args.samples}, one instance, fastest of {args.repeats} repeats in seconds (the small "
        "model: x4 repeats of 20 back-to-back calls, their mean); medians below, then the small model's "
        "isolated calls (one call after a 0.1 s pause: every thread asleep)"
    )
    header = (
        f"{'model':28} {'calls':>9} {'e2e':>9} {'direct':>9} {'raw':>9} {'e2e/raw':>8} {'e2e-raw':>9} "
        f"{'e2e-dir':>9} {'captum':>9} {'e2e/capt':>8} {'raw/capt':>8} {'ORT fwd':>9}"
    )
    print(header)
    for r in results:
        calls = f"{r.calls[0]}+{sum(r.calls[1:])}/{len(r.calls) - 1}" if len(r.calls) > 1 else str(r.calls)
        print(
            f"{r.label:28} {calls:>9} {r.e2e_s:9.4f} {r.direct_s:9.4f} {r.raw_s:9.4f} {r.e2e_s / r.raw_s:8.3f} "
            f"{(r.e2e_s - r.raw_s) * 1000:7.2f}ms {(r.e2e_s - r.direct_s) * 1000:7.2f}ms {r.captum_s:9.4f} "
            f"{r.e2e_s / r.captum_s:8.3f} {r.raw_s / r.captum_s:8.3f} {r.forward_s:9.4f}"
        )
    for r in results:
        print(
            f"{'  medians':28} {'':>9} "
            + " ".join(f"{r.medians[k]:9.4f}" for k in ("e2e", "direct", "raw"))
            + f" {'':8} {'':9} {'':9} {r.medians['captum']:9.4f} {'':8} {'':8} {r.medians['forward']:9.4f}"
        )
    for r in results:
        if r.isolated:
            i = r.isolated
            print(
                f"{'  isolated calls':28} {'':>9} {i['e2e']:9.4f} {i['direct']:9.4f} {i['raw']:9.4f} "
                f"{i['e2e'] / i['raw']:8.3f} {(i['e2e'] - i['raw']) * 1000:7.2f}ms "
                f"{(i['e2e'] - i['direct']) * 1000:7.2f}ms "
                f"{i['captum']:9.4f} {'':8} {'':8} {i['forward']:9.4f}"
            )
    print(
        "calls: clean-pass rows + noisy rows / model calls (memory-budget chunks); direct: estimator.explain "
        "in-process (e2e-dir = gRPC + service); "
        + "; ".join(f"{r.label}: {r.bytes_per_sample / 2**20:.1f} MiB per sample" for r in results)
    )
    print(
        f"\nAggregate throughput (explanations/s; refused in brackets), {args.requests_per_client} requests "
        f"per client, server --max-concurrent-requests {args.concurrency}"
    )
    for r in results:
        cells = "  ".join(
            f"{c:2d} clients: {r.throughput[c]:7.2f} [{r.refused[c]}]" for c in sorted(r.throughput)
        )
        print(f"{r.label:28} {cells}")
    failures = 0
    print("\nFloors")
    for r in results:
        checks: list[tuple[str, bool]] = []
        if r.label.startswith("ResNet"):
            checks += [
                (f"e2e <= {FLOOR_VS_RAW} x raw ({r.e2e_s / r.raw_s:.3f})", r.e2e_s <= FLOOR_VS_RAW * r.raw_s),
                (
                    f"e2e <= {FLOOR_VS_CAPTUM} x Captum ({r.e2e_s / r.captum_s:.3f})",
                    r.e2e_s <= FLOOR_VS_CAPTUM * r.captum_s,
                ),
            ]
        else:
            checks.append(
                (
                    f"e2e <= raw + 1 ms ({(r.e2e_s - r.raw_s) * 1000:.2f} ms over)",
                    r.e2e_s <= r.raw_s + FLOOR_SMALL_OVERHEAD_S,
                )
            )
        if len(r.rss) == 2:
            small, large = (r.rss[k] for k in sorted(r.rss))
            text = (
                f"peak RSS N={max(r.rss)} <= {FLOOR_RSS} x N={min(r.rss)} "
                f"({large / 2**20:.0f} MiB vs {small / 2**20:.0f} MiB = {large / small:.3f})"
            )
            if r.label.startswith("ResNet"):
                checks.append((text, large <= FLOOR_RSS * small))
            else:
                # A small model's N = 1000 rows fit the memory budget in one chunk: its growth is
                # bounded by the budget, not by N; the floor is about chunking large models.
                print(f"  info  {r.label}: {text}")
        for text, ok in checks:
            failures += not ok
            print(f"  {_verdict(ok)}  {r.label}: {text}")
    return 1 if failures else 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--models", default="resnet18,digits_cnn")
    parser.add_argument("--samples", type=int, default=50)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--clients", type=lambda s: [int(c) for c in s.split(",")], default=[1, 4, 16])
    parser.add_argument("--requests-per-client", type=int, default=2)
    parser.add_argument("--rss-samples", type=int, default=1000, help="0 skips the RSS comparison")
    # The floors were set at 256 MiB, the budget of the first releases: the server's default now
    # follows the machine's memory, and peak RSS is flat in N only beyond one budget's worth of rows.
    parser.add_argument(
        "--memory-budget", type=int, default=256 << 20, help="bytes per explanation (server and direct)"
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="ONNX Runtime intra-op threads, server and raw (default: the server's default)",
    )
    parser.add_argument(
        "--concurrency",
        type=int,
        default=None,
        help="server --max-concurrent-requests (default: the server's default for this machine)",
    )
    args = parser.parse_args(argv)
    # The server's own defaults, resolved here so that the raw runs use the same thread count.
    defaults = Settings(
        max_concurrent_requests=args.concurrency or default_concurrency(), intra_op_threads=args.threads
    )
    args.concurrency, args.threads = defaults.max_concurrent_requests, defaults.session_threads()
    print(
        f"server: --max-concurrent-requests {args.concurrency}, --intra-op-threads {args.threads} "
        "(raw and direct runs use the same threads)"
    )
    torch.manual_seed(0)
    cases = _cases(_zoo())
    results = []
    for name in args.models.split(","):
        with tempfile.TemporaryDirectory(prefix="mollify-bench-") as workdir:
            print(f"measuring {cases[name].label} ...", flush=True)
            results.append(measure(cases[name], args, Path(workdir)))
            report(results[-1:], args)  # printed as soon as measured; the whole table follows
    return report(results, args)


if __name__ == "__main__":
    sys.exit(main())
