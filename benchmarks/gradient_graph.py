"""Gradient graph in ONNX Runtime vs torch autograd vs the ONNX Runtime forward pass.

    PYTHONPATH=. python benchmarks/gradient_graph.py [--batch 50] [--repeats 7] [--models resnet18,digits_cnn]
                                                     [--profile DIR] [--threads N]

For each model (random weights, exported by the dynamo exporter): the median wall time of
(a) one run of the gradient graph on a batch of N inputs with their cotangents (GradientSession),
(b) torch forward + ``torch.autograd.grad`` on the same batch, (c) the ONNX Runtime forward pass
alone. The three are timed in turns within each repeat, so load from other processes hits them
alike, and the ratios come from the same run. Floors (the task's acceptance criteria):
gradient ≤ 0.65 × torch and ≤ 3.3 × forward. ``--profile DIR`` also writes an ONNX Runtime
profile of the gradient graph and prints where its time goes, by op type and by node.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(_ROOT))  # the test zoo is imported as `tests.test_models.zoo_modules`

import numpy as np  # noqa: E402
import onnx  # noqa: E402
import onnxruntime as ort  # noqa: E402
import torch  # noqa: E402

from models.export import export_torch_module  # noqa: E402
from models.runtime import ForwardSession, GradientSession, forward_model, freeze_weights  # noqa: E402

GRADIENT_FLOOR_VS_TORCH = 0.65
GRADIENT_FLOOR_VS_FORWARD = 3.3


def _zoo() -> ModuleType:
    """The hand-written reference architectures of the test zoo (torchvision does not import here)."""
    from tests.test_models import zoo_modules

    return zoo_modules


def _digits_cnn() -> torch.nn.Module:
    from models.demo.build import digits_cnn_module

    return digits_cnn_module()


@dataclass(frozen=True)
class Case:
    name: str
    module: Callable[[], torch.nn.Module]
    instance_shape: tuple[int, ...]
    classes: int


def _cases() -> dict[str, Case]:
    zoo = _zoo()
    return {
        "resnet18": Case("ResNet-18 layout 3x224x224", zoo.ResNet18, (3, 224, 224), 1000),
        "digits_cnn": Case("digits CNN 1x8x8", _digits_cnn, (1, 8, 8), 10),
    }


@dataclass(frozen=True)
class Row:
    """Median seconds per run of each contender, and the fastest run of each (less load-sensitive)."""

    name: str
    batch: int
    gradient_s: float
    torch_s: float
    forward_s: float
    gradient_min_s: float
    torch_min_s: float
    forward_min_s: float

    @property
    def vs_torch(self) -> float:
        return self.gradient_s / self.torch_s

    @property
    def vs_forward(self) -> float:
        return self.gradient_s / self.forward_s


def _timed(function: Callable[[], object]) -> float:
    start = time.perf_counter()
    function()
    return time.perf_counter() - start


def measure(
    case: Case, batch: int, repeats: int, threads: int | None, profile: Path | None, seed: int = 0
) -> Row:
    zoo = _zoo()
    module = zoo.init_module(case.module(), seed)
    inputs = zoo.random_input((batch, *case.instance_shape), seed + 1)
    cotangents = zoo.one_hot_cotangents(batch, case.classes, seed + 2)
    original, gradient = export_torch_module(module, inputs[:2], dynamo=True)
    session = GradientSession(gradient, device="cpu", intra_op_threads=threads)
    forward = ForwardSession(original, device="cpu", intra_op_threads=threads)
    x = inputs.numpy()
    torch_cotangents = torch.from_numpy(cotangents)

    def run_gradient() -> object:
        return session(x, cotangents)

    def run_torch() -> object:
        leaf = inputs.detach().requires_grad_(True)
        return torch.autograd.grad(module(leaf), leaf, grad_outputs=torch_cotangents)

    def run_forward() -> object:
        return forward.run(x)

    for function in (run_gradient, run_torch, run_forward):
        function()
    times: dict[str, list[float]] = defaultdict(list)
    for _ in range(repeats):
        times["gradient"].append(_timed(run_gradient))
        times["torch"].append(_timed(run_torch))
        times["forward"].append(_timed(run_forward))
    if profile is not None:
        profile_gradient_graph(gradient, x, cotangents, session, profile / f"{case.name.split()[0]}", threads)
    return Row(
        case.name,
        batch,
        statistics.median(times["gradient"]),
        statistics.median(times["torch"]),
        statistics.median(times["forward"]),
        min(times["gradient"]),
        min(times["torch"]),
        min(times["forward"]),
    )


def profile_gradient_graph(
    gradient: onnx.ModelProto,
    x: np.ndarray,
    cotangents: np.ndarray,
    session: GradientSession,
    prefix: Path,
    threads: int | None,
    runs: int = 3,
) -> None:
    """Run the gradient graph under ONNX Runtime's profiler and print the top op types and nodes.

    Profiles the graph GradientSession runs without overrides: weights frozen as constants and only
    the nodes the explained tensor and the gradient need.
    """
    prefix.parent.mkdir(parents=True, exist_ok=True)
    metadata = session.metadata
    graph = forward_model(
        freeze_weights(gradient, metadata.weights), [metadata.explained, session.gradient_name]
    )
    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.enable_profiling = True
    options.profile_file_prefix = str(prefix)
    if threads:
        options.intra_op_num_threads = threads
    profiled = ort.InferenceSession(graph.SerializeToString(), options, providers=["CPUExecutionProvider"])
    feed = {session.input_name: x, session.metadata.cotangent: cotangents}
    for _ in range(runs + 1):
        profiled.run([session.gradient_name], feed)
    trace = Path(profiled.end_profiling())
    events = json.loads(trace.read_text())
    # The first run allocates and plans memory; only the later runs are counted.
    model_runs = sorted((e["ts"], e["ts"] + e["dur"]) for e in events if e.get("name") == "model_run")
    warm_from = model_runs[0][1] if len(model_runs) > runs else 0
    events = [
        e
        for e in events
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time") and e["ts"] >= warm_from
    ]
    by_op: dict[str, float] = defaultdict(float)
    by_node: dict[str, float] = defaultdict(float)
    for event in events:
        op = event.get("args", {}).get("op_name", "?")
        node = event["name"].removesuffix("_kernel_time")
        by_op[op] += event["dur"] / runs
        by_node[f"{op} {node}"] += event["dur"] / runs
    total = sum(by_op.values())
    print(f"\nprofile {trace} (kernel time per run {total / 1e3:.1f} ms)")
    print(f"{'op type':<28}{'ms/run':>10}{'share':>8}")
    for op, micros in sorted(by_op.items(), key=lambda item: -item[1])[:12]:
        print(f"{op:<28}{micros / 1e3:>10.1f}{micros / total:>8.1%}")
    print(f"{'node':<60}{'ms/run':>10}")
    for node, micros in sorted(by_node.items(), key=lambda item: -item[1])[:12]:
        print(f"{node[:59]:<60}{micros / 1e3:>10.1f}")


def format_table(rows: Sequence[Row]) -> str:
    header = (
        f"{'model':<28}{'N':>4}{'ORT gradient s':>16}{'torch fwd+grad s':>18}{'ORT forward s':>15}"
        f"{'grad/torch':>12}{'grad/fwd':>10}  floors (≤{GRADIENT_FLOOR_VS_TORCH}, ≤{GRADIENT_FLOOR_VS_FORWARD})"
    )
    lines = [header, "-" * len(header)]
    for row in rows:
        verdict = (
            "ok"
            if row.vs_torch <= GRADIENT_FLOOR_VS_TORCH and row.vs_forward <= GRADIENT_FLOOR_VS_FORWARD
            else "MISSED"
        )
        lines.append(
            f"{row.name:<28}{row.batch:>4}{row.gradient_s:>16.4f}{row.torch_s:>18.4f}{row.forward_s:>15.4f}"
            f"{row.vs_torch:>12.2f}{row.vs_forward:>10.2f}  {verdict}"
        )
    lines.append("")
    lines.append("fastest run of each (less sensitive to other processes on the host):")
    for row in rows:
        lines.append(
            f"{row.name:<28}{row.batch:>4}{row.gradient_min_s:>16.4f}{row.torch_min_s:>18.4f}{row.forward_min_s:>15.4f}"
            f"{row.gradient_min_s / row.torch_min_s:>12.2f}{row.gradient_min_s / row.forward_min_s:>10.2f}"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--batch", type=int, default=50)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--models", default="resnet18,digits_cnn")
    parser.add_argument("--threads", type=int, default=None, help="intra-op threads for ONNX Runtime")
    parser.add_argument("--profile", type=Path, default=None, help="folder for ONNX Runtime profiles")
    args = parser.parse_args(argv)
    cases = _cases()
    names = [name.strip() for name in args.models.split(",") if name.strip()]
    unknown = [name for name in names if name not in cases]
    if unknown:
        parser.error(f"unknown models {unknown}; choose from {sorted(cases)}")
    print(
        f"torch {torch.__version__} ({torch.get_num_threads()} threads), onnxruntime {ort.__version__}, "
        f"batch {args.batch}, median of {args.repeats} repeats, load average {os.getloadavg()[0]:.2f}"
    )
    rows = [measure(cases[name], args.batch, args.repeats, args.threads, args.profile) for name in names]
    print(f"\nload average at the end {os.getloadavg()[0]:.2f}")
    print(format_table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
