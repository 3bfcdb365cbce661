"""Samples each sampler needs to reach a relative error, against a large i.i.d. reference.

For each model, SmoothGrad (gaussian, α = 0.2) of one instance is computed with many i.i.d. draws
(the reference θ*), then each sampler at N = 10, 20, 40, … with several seeds; the relative error
is ``‖θ_N − θ*‖₂ / ‖θ*‖₂`` averaged over the seeds. The table gives the smallest N on the grid whose
mean error is at most the target (5 %), and the error at a common N for a ratio side by side.

    PYTHONPATH=. python benchmarks/samplers.py [--models digits_cnn,breast_cancer_mlp,resnet18]
        [--reference 20000] [--target 0.05] [--seeds 4] [--max-samples 640]

ResNet-18 at 224² costs about 30 ms per sample on this 2-core machine: ``--resnet-reference`` (default
2 000) and ``--resnet-max-samples`` keep it within minutes; the table says which reference was used.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(_ROOT))

from estimator import explain  # noqa: E402
from estimator.method import ClassTarget, Method  # noqa: E402
from estimator.samplers import SAMPLER_NAMES  # noqa: E402
from models.demo import repository_path  # noqa: E402
from models.runtime import GradientSession  # noqa: E402
from service.graphs import cached_gradient_graph  # noqa: E402

REPLICATES = 10  # of the structured samplers: N must be a multiple, so the grid starts at 10


@dataclass
class Subject:
    label: str
    session: GradientSession
    x: np.ndarray
    lower: float | np.ndarray
    upper: float | np.ndarray
    target: int


def _demo(name: str, cache: Path) -> Subject:
    from models.config import ModelConfig
    from models.demo.data import breast_cancer_data, digits_data

    folder = repository_path() / name
    config = ModelConfig.load(folder)
    path = cached_gradient_graph(
        (folder / "model.onnx").read_bytes(),
        config.input_name,
        config.input_shape,
        config.explained_tensor,
        cache,
    )
    session = GradientSession(path, input_name=config.input_name, device="cpu")
    if name == "digits_cnn":
        data = digits_data()
        x = data.to_input(data.test_pixels[:1])[0]
    else:
        cancer = breast_cancer_data()
        x = cancer.to_input(cancer.test_features[:1])[0]
    scores = session.run_outputs(x[None])[config.explained_tensor][0]
    return Subject(name, session, x, config.lower_array(), config.upper_array(), int(np.argmax(scores)))


def _resnet(cache: Path, workdir: Path) -> Subject:
    import torch

    from models.export import export_torch_onnx
    from tests.test_models import zoo_modules as zoo

    module = zoo.init_module(zoo.ResNet18(), 0)
    x = zoo.random_input((1, 3, 224, 224), 1).numpy()
    model = export_torch_onnx(module, torch.from_numpy(np.repeat(x, 2, axis=0)))
    path = cached_gradient_graph(model.SerializeToString(), "input", (3, 224, 224), "logits", cache)
    session = GradientSession(path, input_name="input", device="cpu")
    scores = session.run_outputs(x)["logits"][0]
    return Subject("resnet18 (224²)", session, x[0], -1.0, 1.0, int(np.argmax(scores)))


def _attribution(subject: Subject, samples: int, sampler: str, seed: int) -> np.ndarray:
    method = Method(samples=samples, sampler=sampler, replicates=REPLICATES)  # type: ignore[arg-type]
    result = explain(
        subject.session,
        subject.x,
        method,
        ClassTarget(subject.target),
        lower=subject.lower,
        upper=subject.upper,
        seed=seed,
    )
    return np.asarray(result.attribution, dtype=np.float64)


def measure(
    subject: Subject, reference: int, grid: list[int], seeds: int, target: float
) -> dict[str, list[float]]:
    started = time.perf_counter()
    truth = _attribution(subject, reference, "iid", 10_000)
    norm = float(np.linalg.norm(truth))
    errors: dict[str, list[float]] = {}
    for sampler in SAMPLER_NAMES:
        if sampler == "sobol" and subject.x.size > 21201:
            errors[sampler] = [float("nan")] * len(grid)
            continue
        errors[sampler] = []
        for n in grid:
            runs = [
                np.linalg.norm(_attribution(subject, n, sampler, seed) - truth) / norm
                for seed in range(seeds)
            ]
            errors[sampler].append(float(np.mean(runs)))
            print(
                f"  {subject.label} {sampler} N = {n}: mean relative error {errors[sampler][-1]:.4f}",
                file=sys.stderr,
            )
            if errors[sampler][-1] <= target and n >= 40:
                break
    print(
        f"  ({subject.label}: reference N = {reference}, {time.perf_counter() - started:.0f} s)",
        file=sys.stderr,
    )
    return errors


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--models", default="digits_cnn,breast_cancer_mlp,resnet18")
    parser.add_argument("--reference", type=int, default=20_000)
    parser.add_argument("--resnet-reference", type=int, default=2_000)
    parser.add_argument("--target", type=float, default=0.05)
    parser.add_argument("--seeds", type=int, default=4)
    parser.add_argument("--max-samples", type=int, default=2560)
    parser.add_argument("--resnet-max-samples", type=int, default=320)
    args = parser.parse_args()

    rows = []
    with tempfile.TemporaryDirectory() as work:
        cache = Path(work) / "cache"
        for name in args.models.split(","):
            if name == "resnet18":
                subject, reference, cap, seeds = (
                    _resnet(cache, Path(work)),
                    args.resnet_reference,
                    args.resnet_max_samples,
                    max(2, args.seeds // 2),
                )
            else:
                subject, reference, cap, seeds = (
                    _demo(name, cache),
                    args.reference,
                    args.max_samples,
                    args.seeds,
                )
            grid = [10 * 2**k for k in range(20) if 10 * 2**k <= cap]
            errors = measure(subject, reference, grid, seeds, args.target)
            rows.append((subject.label, reference, grid, errors))

    print(
        f"\nSmoothGrad (gaussian, α = 0.2): samples to reach {100 * args.target:.0f} % mean relative error "
        f"against an i.i.d. reference; structured samplers use {REPLICATES} replicates"
    )
    print(
        f"{'model':<22} {'reference N':>11} "
        + " ".join(f"{s:>16}" for s in SAMPLER_NAMES)
        + f" {'error at N=40 (iid→best)':>26}"
    )
    for label, reference, grid, errors in rows:
        cells = []
        for sampler in SAMPLER_NAMES:
            found = next((grid[i] for i, e in enumerate(errors[sampler]) if e <= args.target), None)
            if np.isnan(errors[sampler][0]):
                cells.append("n/a (> 21201 D)")
            else:
                cells.append(str(found) if found is not None else f"> {grid[len(errors[sampler]) - 1]}")
        at40 = {s: errors[s][2] for s in SAMPLER_NAMES if len(errors[s]) > 2 and not np.isnan(errors[s][2])}
        best = min(at40, key=lambda s: at40[s]) if at40 else "-"
        note = (
            f"{at40.get('iid', float('nan')):.3f} → {at40.get(best, float('nan')):.3f} ({best})"
            if at40
            else "-"
        )
        print(f"{label:<22} {reference:>11} " + " ".join(f"{c:>16}" for c in cells) + f" {note:>26}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
