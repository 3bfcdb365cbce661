"""The GPU path end to end vs the work it wraps, on one device; prints one table.

    PYTHONPATH=. python benchmarks/gpu.py [--device cuda|cuda:N|cpu] [--quick] [--samples 50,1000]
                                         [--models resnet18,resnet50] [--repeats 3] [--time-limit-s 200]

For the ResNet-18 and ResNet-50 layouts (hand-written as torchvision lays them out, random seeded
weights) at 3×224×224 and SmoothGrad with N = 50 and N = 1000 (α = 0.2), on one device:

- ``mollify``: ``estimator.explain`` in this process on a ``GradientSession`` (the server's memory
  budget, its I/O binding setting);
- ``grpc``: the same through a server in this process (``ExplainerClient.explain`` over loopback);
- ``grpc x4``: four clients at once, the wall time per request;
- ``raw``: only the gradient-graph calls the estimator makes (N + 1 rows, the same chunks);
- ``ort fwd``: the ONNX Runtime forward pass of N inputs;
- ``captum``: PyTorch + Captum ``NoiseTunnel(Saliency)`` with the same N and σ on the same device.

Columns: fastest of the repeats (seconds), median, the device's peak memory in use and mean
utilisation while it ran (``nvidia-smi`` sampled every 50 ms in a thread; ``torch`` peak for
Captum). Measurements that would not start before ``--time-limit-s`` are printed as skipped,
so the whole run stays under four minutes. ``--device cpu --quick`` (N = 4 and 8, 32×32 inputs,
narrow layouts) checks the script on a machine without a GPU. No speed is asserted here; the
targets are printed beside the figures.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType

# Run as a script, this file's folder comes first on sys.path and its name would shadow packages.
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
from models.runtime import ForwardSession, GradientSession, parse_device  # noqa: E402
from service.client import ExplainerClient  # noqa: E402
from service.graphs import cached_gradient_graph  # noqa: E402
from service.server import create_server  # noqa: E402
from service.settings import Settings  # noqa: E402

LOWER, UPPER, ALPHA = -1.0, 1.0, 0.2
TARGET_VS_RAW, TARGET_VS_CAPTUM, TARGET_GRPC_S = 1.15, 3.0, 0.002


def _zoo() -> ModuleType:
    from tests.test_models import zoo_modules

    return zoo_modules


class DeviceSampler:
    """``nvidia-smi`` sampled every 50 ms in a thread: peak memory used (MiB) and mean utilisation (%)."""

    def __init__(self, index: int | None) -> None:
        self._index = index
        self._process: subprocess.Popen[str] | None = None
        self._samples: list[tuple[float, float]] = []
        self._thread: threading.Thread | None = None
        self.available = index is not None and shutil.which("nvidia-smi") is not None

    def __enter__(self) -> DeviceSampler:
        if self.available:
            self._samples = []
            self._process = subprocess.Popen(
                [
                    "nvidia-smi",
                    "-i",
                    str(self._index),
                    "--query-gpu=utilization.gpu,memory.used",
                    "--format=csv,noheader,nounits",
                    "-lms",
                    "50",
                ],
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
                text=True,
            )
            self._thread = threading.Thread(target=self._read, daemon=True)
            self._thread.start()
        return self

    def _read(self) -> None:
        assert self._process is not None and self._process.stdout is not None
        for line in self._process.stdout:
            try:
                util, memory = (float(part) for part in line.split(","))
            except ValueError:
                continue
            self._samples.append((util, memory))

    def __exit__(self, *exc: object) -> None:
        if self._process is not None:
            self._process.terminate()
            self._process.wait(timeout=10)
        if self._thread is not None:
            self._thread.join(timeout=10)

    @property
    def peak_mib(self) -> float:
        return max((m for _, m in self._samples), default=float("nan"))

    @property
    def mean_utilisation(self) -> float:
        return statistics.fmean(u for u, _ in self._samples) if self._samples else float("nan")


@dataclass
class Row:
    model: str
    samples: int
    what: str
    times: list[float] = field(default_factory=list)
    peak_mib: float = float("nan")
    utilisation: float = float("nan")
    note: str = ""

    @property
    def best(self) -> float:
        return min(self.times) if self.times else float("nan")

    @property
    def median(self) -> float:
        return statistics.median(self.times) if self.times else float("nan")


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.kind, self.index = parse_device(args.device)
        self.on_gpu = self.kind == "cuda"
        self.torch_device = torch.device(f"cuda:{self.index}" if self.on_gpu else "cpu")
        self.started = time.perf_counter()
        self.rows: list[Row] = []

    def out_of_time(self) -> bool:
        return time.perf_counter() - self.started > self.args.time_limit_s

    def measure(self, row: Row, function: Callable[[], object], repeats: int) -> None:
        if self.out_of_time():
            row.note = "skipped (time limit)"
            self.rows.append(row)
            return
        function()  # warm-up: cuDNN algorithm search, arenas, first-call allocations
        sampler = DeviceSampler(self.index if self.on_gpu else None)
        if self.on_gpu:
            torch.cuda.synchronize(self.torch_device)
            torch.cuda.reset_peak_memory_stats(self.torch_device)
        with sampler:
            for _ in range(repeats):
                start = time.perf_counter()
                function()
                if self.on_gpu:
                    torch.cuda.synchronize(self.torch_device)
                row.times.append(time.perf_counter() - start)
                if self.out_of_time():
                    break
        row.peak_mib, row.utilisation = sampler.peak_mib, sampler.mean_utilisation
        if self.on_gpu and row.what == "captum":
            row.peak_mib = torch.cuda.max_memory_allocated(self.torch_device) / (1 << 20)
            row.note = "peak: torch allocator"
        self.rows.append(row)
        print(f"  {row.model} N={row.samples} {row.what}: {row.best:.4f} s", flush=True)


def _export(
    name: str, module: torch.nn.Module, shape: tuple[int, ...], folder: Path, seed: int
) -> np.ndarray:
    zoo = _zoo()
    x = zoo.random_input((1, *shape), seed).numpy()
    target = folder / name
    target.mkdir(parents=True)
    model = export_torch_onnx(module, torch.from_numpy(np.repeat(x, 2, axis=0)))
    (target / "model.onnx").write_bytes(model.SerializeToString())
    ModelConfig(
        name=name,
        input_name="input",
        input_shape=shape,
        explained_tensor="logits",
        lower=LOWER,
        upper=UPPER,
        description=name,
    ).save(target)
    return x


class _Recorder:
    """A GradientModel proxy recording the rows of every call (the raw runs repeat exactly them)."""

    def __init__(self, model: GradientSession) -> None:
        self.model, self.batches = model, []  # type: ignore[var-annotated]

    def __getattr__(self, name: str) -> object:
        return getattr(self.model, name)

    def __call__(self, inputs: np.ndarray, cotangents: np.ndarray, weight_overrides: object = None) -> object:
        self.batches.append(len(inputs))
        return self.model(inputs, cotangents, weight_overrides)  # type: ignore[arg-type]


def run_model(
    bench: Bench, name: str, module: torch.nn.Module, shape: tuple[int, ...], workdir: Path
) -> None:
    args = bench.args
    repository, cache = workdir / "models" / name, workdir / "cache"
    x = _export(name, module, shape, repository, seed=1)
    settings = Settings(
        address="127.0.0.1:0",
        model_repository=repository,
        cache_dir=cache,
        device=args.device,
        max_concurrent_requests=1,
        max_queued_requests=16,
        max_evaluations=10_000_000,
        max_message_bytes=256 << 20,
        log_level="WARNING",
    )
    graph = cached_gradient_graph(
        (repository / name / "model.onnx").read_bytes(), "input", shape, "logits", cache
    )
    session = GradientSession(
        graph, input_name="input", device=args.device, options=settings.runtime_options()
    )
    forward = ForwardSession(
        str(repository / name / "model.onnx"), device=args.device, options=settings.runtime_options()
    )
    server, port = create_server(settings)
    server.start()
    torch_module = module.to(bench.torch_device)
    try:
        with ExplainerClient(f"127.0.0.1:{port}", timeout=600) as client:
            for samples in args.samples:
                method = Method(samples=samples, alpha=ALPHA)
                recorder = _Recorder(session)
                reference = explain(
                    recorder,
                    x[0],
                    method,
                    lower=LOWER,
                    upper=UPPER,
                    seed=1,
                    memory_budget_bytes=settings.memory_budget_bytes,
                )
                calls = list(recorder.batches)
                target = int(np.argmax(reference.outputs))
                rng = np.random.default_rng(2)
                rows = np.repeat(x, sum(calls), axis=0)
                rows[1:] += rng.normal(0, ALPHA * (UPPER - LOWER), rows[1:].shape).astype(np.float32)
                cotangents = np.zeros((len(rows), *session.output_shape), np.float32)
                cotangents[:, target] = 1.0
                starts = np.cumsum([0, *calls])
                batch = np.repeat(x, samples, axis=0)
                repeats = args.repeats if samples <= 100 else 1
                note = f"{len(calls) - 1} chunks of <= {max(calls[1:] or calls)} rows"

                def direct(method: Method = method) -> object:
                    return explain(
                        session,
                        x[0],
                        method,
                        lower=LOWER,
                        upper=UPPER,
                        seed=1,
                        memory_budget_bytes=settings.memory_budget_bytes,
                    )

                def grpc(method: Method = method) -> object:
                    return client.explain(name, x, method=method, seed=1)

                def grpc4(method: Method = method) -> object:
                    def one(_: int) -> object:
                        with ExplainerClient(f"127.0.0.1:{port}", timeout=600) as own:
                            return own.explain(name, x, method=method, seed=1)

                    with ThreadPoolExecutor(4) as pool:
                        return list(pool.map(one, range(4)))

                def raw(
                    rows: np.ndarray = rows, cotangents: np.ndarray = cotangents, starts: np.ndarray = starts
                ) -> object:
                    return [
                        session(rows[a:b], cotangents[a:b])
                        for a, b in zip(starts[:-1], starts[1:], strict=True)
                    ]

                captum = _captum(
                    torch_module,
                    torch.from_numpy(x).to(bench.torch_device),
                    samples,
                    ALPHA * (UPPER - LOWER),
                    target,
                    chunk=max(calls[1:] or calls),
                )
                bench.measure(Row(name, samples, "mollify", note=note), direct, repeats)
                bench.measure(Row(name, samples, "grpc"), grpc, repeats)
                if samples <= 100:
                    quad = Row(name, samples, "grpc x4", note="wall time / 4 requests")
                    bench.measure(quad, grpc4, repeats)
                    quad.times = [t / 4 for t in quad.times]
                bench.measure(Row(name, samples, "raw"), raw, repeats)
                bench.measure(Row(name, samples, "ort fwd"), lambda batch=batch: forward.run(batch), repeats)
                if captum is None:
                    bench.rows.append(Row(name, samples, "captum", note="captum does not import"))
                else:
                    bench.measure(Row(name, samples, "captum"), captum, repeats)
    finally:
        server.stop(0).wait(30)
        torch_module.to("cpu")


def _captum(
    module: torch.nn.Module, x: torch.Tensor, samples: int, sigma: float, target: int, chunk: int
) -> Callable[[], object] | None:
    try:
        from captum.attr import NoiseTunnel, Saliency
    except ImportError:
        return None
    tunnel = NoiseTunnel(Saliency(module))

    def run() -> object:
        # Captum's own batching (nt_samples_batch_size) keeps N = 1000 within the device's memory.
        return tunnel.attribute(
            x,
            nt_type="smoothgrad",
            nt_samples=samples,
            stdevs=sigma,
            target=target,
            abs=False,
            nt_samples_batch_size=min(samples, chunk),
        )

    return run


def report(bench: Bench) -> None:
    header = (
        f"{'model':10} {'N':>5} {'what':9} {'best s':>9} {'median s':>9} {'peak MiB':>9} {'util %':>7}  note"
    )
    print(
        f"\ndevice {bench.args.device} ({_device_name(bench)}), SmoothGrad alpha = {ALPHA}, "
        f"one instance; fastest of {bench.args.repeats} (N > 100: one run)"
    )
    print(header)
    print("-" * len(header))
    for row in bench.rows:
        print(
            f"{row.model:10} {row.samples:5d} {row.what:9} {row.best:9.4f} {row.median:9.4f} "
            f"{row.peak_mib:9.0f} {row.utilisation:7.1f}  {row.note}"
        )
    print(
        f"\ntargets (ResNet-50, N = 50): mollify <= {TARGET_VS_RAW} x raw, >= {TARGET_VS_CAPTUM} x faster than "
        f"captum, grpc - mollify <= {TARGET_GRPC_S * 1000:.0f} ms"
    )
    by = {(r.model, r.samples, r.what): r.best for r in bench.rows}
    for model in sorted({r.model for r in bench.rows}):
        for samples in bench.args.samples:
            best = {
                what: by.get((model, samples, what), float("nan"))
                for what in ("mollify", "raw", "captum", "grpc")
            }
            print(
                f"  {model} N={samples}: mollify/raw {best['mollify'] / best['raw']:.3f}, captum/mollify "
                f"{best['captum'] / best['mollify']:.2f}, grpc-mollify "
                f"{(best['grpc'] - best['mollify']) * 1000:.2f} ms"
            )
    print(f"total {time.perf_counter() - bench.started:.0f} s")


def _device_name(bench: Bench) -> str:
    return torch.cuda.get_device_name(bench.torch_device) if bench.on_gpu else "CPU"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--device", default="cuda", help="cuda, cuda:N or cpu (default: cuda)")
    parser.add_argument(
        "--quick", action="store_true", help="N = 4 and 8, 32x32 inputs, narrow layouts (CPU check)"
    )
    parser.add_argument("--samples", default=None, help="comma-separated N (default 50,1000; quick: 4,8)")
    parser.add_argument("--models", default="resnet18,resnet50")
    parser.add_argument("--repeats", type=int, default=None, help="default 3 (quick: 1)")
    parser.add_argument(
        "--time-limit-s",
        type=float,
        default=200.0,
        help="no measurement starts after this many seconds (default 200)",
    )
    args = parser.parse_args(argv)
    args.samples = [int(n) for n in (args.samples or ("4,8" if args.quick else "50,1000")).split(",")]
    args.repeats = args.repeats or (1 if args.quick else 3)
    bench = Bench(args)
    if bench.on_gpu and not torch.cuda.is_available():
        print(f"{args.device}: torch sees no CUDA device", file=sys.stderr)
        return 2
    zoo = _zoo()
    side, width = (32, 8) if args.quick else (224, 64)
    layouts = {"resnet18": zoo.ResNet18, "resnet50": zoo.ResNet50}
    with tempfile.TemporaryDirectory(prefix="mollify-gpu-bench-") as folder:
        for name in args.models.split(","):
            module = zoo.init_module(layouts[name](classes=10 if args.quick else 1000, width=width), seed=0)
            print(f"{name}: export, gradient graph, sessions", flush=True)
            run_model(bench, name, module, (3, side, side), Path(folder))
    report(bench)
    return 0


if __name__ == "__main__":
    sys.exit(main())
