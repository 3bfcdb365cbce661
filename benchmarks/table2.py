"""The analogue of Table 2 of Zhou et al. 2024 (AdaptGrad) on the demo digits CNN, plus kernels,
inherent noise and convergence.

    PYTHONPATH=. python benchmarks/table2.py [--images 64] [--samples 50] [--ig-steps 20]
        [--ig-samples 20] [--weight-draws 10] [--convergence-images 8] [--threads 1] [--seed 0]

Prints four markdown tables for held-out digits of ``models/demo/digits_cnn`` (explaining the
predicted class's logit):

1. Sparseness (Gini, ↑), complexity (entropy of |map|, nats, ↓ = more concentrated), deletion AUC
   of the class probability (↓), mean inherent noise, and seconds per explanation for Grad, SG, AG,
   GI, S-GI, A-GI, IG(B), S-IG(B), A-IG(B), IG(W), S-IG(W), A-IG(W), NG, S-NG, A-NG (the AdaptGrad
   paper's names: S- = SmoothGrad, A- = AdaptGrad, NG = NoiseGrad; S-NG / A-NG = FusionGrad with that input
   noise). Black = the lower bound 0 (the digits' background), white = the upper bound 1.
2. The five kernels × {fixed, adaptive, truncated} for the smoothed gradient.
3. Relative error ``‖Ĝ_N − Ĝ_ref‖/‖Ĝ_ref‖`` against N for SG and AG (reference: N = 2000, another
   seed), with the estimator's own ``‖SE‖/‖Ĝ‖`` beside it.

Values are mean ± standard deviation over the images. Uses ``models.gradient_graph`` and
``models.runtime`` (ONNX Runtime, CPU); nothing is asserted, the numbers are the output.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import onnx

from estimator import (
    KERNEL_NAMES,
    ClassTarget,
    Method,
    complexity,
    convergence,
    deletion_auc,
    explain,
    sparseness,
)
from estimator.gradient_model import GradientModel
from estimator.method import BaselineName
from models.demo import repository_path
from models.demo.data import digits_data

LOWER, UPPER = 0.0, 1.0


@dataclass
class Row:
    """Per-image values of one method."""

    name: str
    sparseness: list[float]
    complexity: list[float]
    deletion: list[float]
    inherent: list[float]
    seconds: list[float]
    evaluations: int = 0


def open_session(name: str, threads: int) -> GradientModel:
    """Build the gradient graph of a demo model and open it in ONNX Runtime on the CPU."""
    from models.gradient_graph.builder import build_gradient_model
    from models.runtime import GradientSession

    folder = repository_path() / name
    config = json.loads((folder / "config.json").read_text())
    model = onnx.load(folder / "model.onnx")
    graph = build_gradient_model(
        model,
        [config["input_name"]],
        config["explained_tensor"],
        input_shapes={config["input_name"]: config["input_shape"]},
    )
    graph.ir_version = min(graph.ir_version, 10)
    session: GradientModel = GradientSession(
        graph.SerializeToString(), device="cpu", intra_op_threads=threads
    )
    return session


def probability_scorer(model: GradientModel, target: int) -> Callable[[np.ndarray], np.ndarray]:
    """Batched softmax probability of ``target`` from the model's logits (zero cotangent: forward only)."""

    def score(batch: np.ndarray) -> np.ndarray:
        inputs = batch.astype(np.float32)
        logits = model(inputs, np.zeros((inputs.shape[0], *model.output_shape), np.float32)).outputs
        logits = logits.astype(np.float64).reshape(inputs.shape[0], -1)
        shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
        return np.asarray(shifted[:, target] / shifted.sum(axis=1))

    return score


def table2_methods(samples: int, ig_steps: int, ig_samples: int, weight_draws: int) -> dict[str, Method]:
    """Seed 001 Table 2's rows as :class:`Method` values."""
    sg = Method(samples=samples)
    ag = Method(samples=samples, scale="adaptive")
    ig = Method(base="integrated_gradients", ig_steps=ig_steps, samples=ig_samples)
    methods = {
        "Grad": Method(mode="none"),
        "SG": sg,
        "AG": ag,
        "GI": Method(base="gradient_x_input", mode="none"),
        "S-GI": replace(sg, base="gradient_x_input"),
        "A-GI": replace(ag, base="gradient_x_input"),
    }
    baselines: tuple[tuple[BaselineName, str], ...] = (("black", "B"), ("white", "W"))
    for baseline, tag in baselines:
        methods[f"IG({tag})"] = replace(ig, mode="none", ig_baseline=baseline)
        methods[f"S-IG({tag})"] = replace(ig, ig_baseline=baseline)
        methods[f"A-IG({tag})"] = replace(ig, ig_baseline=baseline, scale="adaptive")
    ng = Method(mode="parameter", weight_draws=weight_draws)
    methods["NG"] = ng
    methods["S-NG"] = replace(ng, mode="fusion", samples=max(samples // weight_draws, 2))
    methods["A-NG"] = replace(ng, mode="fusion", samples=max(samples // weight_draws, 2), scale="adaptive")
    return methods


def evaluate(
    model: GradientModel,
    images: np.ndarray,
    targets: Sequence[int],
    methods: dict[str, Method],
    seed: int,
    deletion_steps: int,
) -> list[Row]:
    """Explain every image with every method and score the maps."""
    rows = []
    for name, method in methods.items():
        row = Row(name, [], [], [], [], [])
        for index, (x, target) in enumerate(zip(images, targets, strict=True)):
            start = time.perf_counter()
            result = explain(
                model, x, method, ClassTarget(int(target)), lower=LOWER, upper=UPPER, seed=seed + index
            )
            row.seconds.append(time.perf_counter() - start)
            attribution = result.attribution
            row.sparseness.append(sparseness(attribution))
            row.complexity.append(complexity(attribution))
            row.deletion.append(
                deletion_auc(
                    probability_scorer(model, int(target)), x, attribution, LOWER, steps=deletion_steps
                )
            )
            row.inherent.append(result.inherent_noise)
            row.evaluations = result.gradient_evaluations
        rows.append(row)
        print(f"  {name}: done", file=sys.stderr)
    return rows


def _cell(values: Sequence[float], digits: int = 4) -> str:
    if len(values) < 2:
        return f"{values[0]:.{digits}f}"
    return f"{statistics.fmean(values):.{digits}f} ± {statistics.stdev(values):.{digits}f}"


def print_rows(title: str, rows: Sequence[Row]) -> None:
    print(f"\n### {title}\n")
    print("| method | SS (↑) | complexity (nats) | deletion AUC (↓) | inherent noise | evals | s / expl. |")
    print("|---|---|---|---|---|---|---|")
    for row in rows:
        print(
            f"| {row.name} | {_cell(row.sparseness)} | {_cell(row.complexity, 3)} | {_cell(row.deletion)} | "
            f"{_cell(row.inherent)} | {row.evaluations} | {statistics.fmean(row.seconds):.3f} |"
        )


def print_convergence(
    model: GradientModel, images: np.ndarray, targets: Sequence[int], samples: Sequence[int], seed: int
) -> None:
    print("\n### Relative error against N (reference N = 2000, independent seed)\n")
    print("| method | " + " | ".join(f"N={n}" for n in samples) + " | slope of log error vs log N |")
    print("|---|" + "---|" * (len(samples) + 1))
    for name, method in (("SG", Method()), ("AG", Method(scale="adaptive"))):
        errors: dict[int, list[float]] = {n: [] for n in samples}
        reported: dict[int, list[float]] = {n: [] for n in samples}
        for index, (x, target) in enumerate(zip(images, targets, strict=True)):
            reference = explain(
                model,
                x,
                replace(method, samples=2000),
                ClassTarget(int(target)),
                seed=10**6 + index,
                lower=LOWER,
                upper=UPPER,
            ).attribution
            estimates = {}
            for n in samples:
                result = explain(
                    model,
                    x,
                    replace(method, samples=n),
                    ClassTarget(int(target)),
                    seed=seed + index,
                    lower=LOWER,
                    upper=UPPER,
                )
                estimates[n] = result.attribution
                reported[n].append(result.relative_error)
            for n, error in convergence(estimates, reference).items():
                errors[n].append(error)
        means = [statistics.fmean(errors[n]) for n in samples]
        slope = float(np.polyfit(np.log(samples), np.log(means), 1)[0])
        print(f"| {name} | " + " | ".join(f"{m:.3f}" for m in means) + f" | {slope:.2f} |")
        finite = [[v for v in reported[n] if np.isfinite(v)] for n in samples]
        print(
            f"| {name} ‖SE‖/‖Ĝ‖ | "
            + " | ".join(f"{statistics.fmean(v):.3f}" if v else "–" for v in finite)
            + " | |"
        )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--images", type=int, default=64, help="held-out digits to explain")
    parser.add_argument("--samples", type=int, default=50, help="N for SmoothGrad / AdaptGrad")
    parser.add_argument("--ig-steps", type=int, default=20)
    parser.add_argument("--ig-samples", type=int, default=20, help="N for S-IG / A-IG")
    parser.add_argument("--weight-draws", type=int, default=10, help="M for NoiseGrad")
    parser.add_argument("--deletion-steps", type=int, default=64, help="64 = one pixel per step")
    parser.add_argument("--convergence-images", type=int, default=8)
    parser.add_argument("--threads", type=int, default=1, help="ONNX Runtime intra-op threads")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    model = open_session("digits_cnn", args.threads)
    data = digits_data()
    images = data.to_input(data.test_pixels[: args.images])
    logits = model(images, np.zeros((len(images), *model.output_shape), np.float32)).outputs
    targets = [int(t) for t in np.argmax(logits.reshape(len(images), -1), axis=1)]
    accuracy = float(np.mean(np.array(targets) == data.test_labels[: args.images]))
    print(
        f"digits_cnn: {len(images)} held-out digits, accuracy {accuracy:.3f}, explaining the predicted class"
    )

    methods = table2_methods(args.samples, args.ig_steps, args.ig_samples, args.weight_draws)
    print_rows(
        "Seed 001 Table 2 analogue", evaluate(model, images, targets, methods, args.seed, args.deletion_steps)
    )

    kernels = {}
    for kernel in KERNEL_NAMES:
        for scale in ("fixed", "adaptive", "truncated"):
            kernels[f"{kernel} / {scale}"] = Method(samples=args.samples, kernel=kernel, scale=scale)  # type: ignore[arg-type]
    print_rows(
        f"Kernels × scale policies (smoothed gradient, N={args.samples})",
        evaluate(model, images, targets, kernels, args.seed, args.deletion_steps),
    )

    count = min(args.convergence_images, len(images))
    print_convergence(model, images[:count], targets[:count], (1, 2, 5, 10, 20, 50, 100, 200), args.seed)
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    raise SystemExit(main())
