"""Train and export the demo models: ``python -m models.demo.build [--out DIR] [--seed N]``.

Reproducible: every random draw (weight initialisation, mini-batch order) comes from generators
seeded by ``--seed``; nothing touches global random state. Runs on CPU in well under a minute.
Writes ``<out>/<name>/model.onnx`` (plain forward model with a final Softmax; the explained
tensor ``logits`` is the intermediate before it), ``<out>/<name>/config.json``,
``<out>/review_sentiment/tokenizer.json`` (the text model's tokenizer, :mod:`models.demo.text_build`)
and ``<out>/samples/`` (a few held-out digits as PNGs and breast-cancer rows as CSV).
Needs the ``torch`` extra (torch, onnxscript, scikit-learn) and ``tokenizers``.
"""

from __future__ import annotations

import argparse
import csv
import math
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from models.config import MODEL_FILE_NAME, ModelConfig, Preprocessing
from models.demo import repository_path
from models.demo.data import (
    BREAST_CANCER_SPLIT_SEED,
    DIGITS_SPLIT_SEED,
    BreastCancerData,
    DigitsData,
    breast_cancer_data,
    digits_data,
)
from models.demo.text_build import TEXT_MODEL, build_text
from models.export import append_softmax, export_torch_onnx, save_model

if TYPE_CHECKING:
    import torch
    from torch import nn

__all__ = ["DIGITS_PNG_STD", "BuildReport", "build_all", "digits_cnn_module", "main", "png_value"]

# Samples are stored as 255 - 15·pixel (dark ink on a light page). Inverting gives 15·pixel, and
# dividing by 240 gives exactly pixel/16 in float32 too (a correctly rounded quotient of a
# representable value), whereas multiplying by a rounded 1/240 would miss by an ulp.
DIGITS_PNG_STD = 240.0
_DIGITS_PNG_STEP = 15


@dataclass(frozen=True)
class BuildReport:
    """What one build produced: model folder and held-out accuracy per model."""

    folders: dict[str, Path]
    accuracy: dict[str, float]


def png_value(pixels: np.ndarray) -> np.ndarray:
    """Raw digits pixels 0..16 → the 8-bit PNG values the samples store (255 − 15·pixel)."""
    return (255 - _DIGITS_PNG_STEP * np.asarray(pixels, dtype=np.int64)).astype(np.uint8)


def _init_parameters(module: nn.Module, generator: torch.Generator) -> None:
    """Re-initialise every Conv / Linear layer from ``generator`` (PyTorch's default scheme)."""
    from torch import nn

    for layer in module.modules():
        if isinstance(layer, (nn.Conv2d, nn.Linear)):
            nn.init.kaiming_uniform_(layer.weight, a=math.sqrt(5), generator=generator)
            if layer.bias is not None:
                fan_in = layer.weight[0].numel()
                bound = 1.0 / math.sqrt(fan_in)
                nn.init.uniform_(layer.bias, -bound, bound, generator=generator)


def _train(
    module: nn.Module,
    inputs: np.ndarray,
    labels: np.ndarray,
    *,
    epochs: int,
    batch_size: int,
    learning_rate: float,
    weight_decay: float,
    rng: np.random.Generator,
) -> None:
    import torch
    from torch import nn

    x = torch.from_numpy(inputs)
    y = torch.from_numpy(labels)
    optimizer = torch.optim.Adam(module.parameters(), lr=learning_rate, weight_decay=weight_decay)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs)
    loss_fn = nn.CrossEntropyLoss()
    module.train()
    for _ in range(epochs):
        order = torch.from_numpy(rng.permutation(len(labels)))
        for start in range(0, len(labels), batch_size):
            batch = order[start : start + batch_size]
            optimizer.zero_grad()
            loss = loss_fn(module(x[batch]), y[batch])
            loss.backward()
            optimizer.step()
        scheduler.step()
    module.eval()


def _accuracy(module: nn.Module, inputs: np.ndarray, labels: np.ndarray) -> float:
    import torch

    with torch.no_grad():
        predicted = module(torch.from_numpy(inputs)).argmax(dim=1).numpy()
    return float(np.mean(predicted == labels))


def digits_cnn_module() -> nn.Module:
    """The digits CNN architecture (untrained): input ``(B, 1, 8, 8)``, output ``(B, 10)`` logits."""
    from torch import nn

    return nn.Sequential(
        nn.Conv2d(1, 16, kernel_size=3, padding=1),
        nn.ReLU(),
        nn.Conv2d(16, 32, kernel_size=3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(32 * 4 * 4, 64),
        nn.ReLU(),
        nn.Linear(64, 10),
    )


def _breast_cancer_mlp(n_features: int, n_classes: int) -> nn.Module:
    from torch import nn

    return nn.Sequential(
        nn.Linear(n_features, 32),
        nn.Tanh(),
        nn.Linear(32, 16),
        nn.Tanh(),
        nn.Linear(16, n_classes),
    )


def _export(module: nn.Module, example: np.ndarray, folder: Path) -> Path:
    model = append_softmax(export_torch_onnx(module, example, input_name="input", output_names=("logits",)))
    return save_model(model, folder / MODEL_FILE_NAME)


def build_digits(out: Path, seed: int) -> tuple[Path, float]:
    """Train, export and describe ``digits_cnn``; write the digit PNG samples. Returns (folder, accuracy)."""
    import torch
    from PIL import Image

    data: DigitsData = digits_data()
    module = digits_cnn_module()
    _init_parameters(module, torch.Generator().manual_seed(seed))
    _train(
        module,
        DigitsData.to_input(data.train_pixels),
        data.train_labels,
        epochs=40,
        batch_size=64,
        learning_rate=3e-3,
        weight_decay=1e-4,
        rng=np.random.default_rng(seed),
    )
    test_inputs = DigitsData.to_input(data.test_pixels)
    accuracy = _accuracy(module, test_inputs, data.test_labels)
    folder = out / "digits_cnn"
    folder.mkdir(parents=True, exist_ok=True)
    _export(module, test_inputs[:2], folder)
    config = ModelConfig(
        name="digits_cnn",
        input_name="input",
        input_shape=(1, 8, 8),
        explained_tensor="logits",
        lower=0.0,
        upper=1.0,
        labels=[str(k) for k in range(10)],
        preprocessing=Preprocessing(
            kind="image", size=(8, 8), channels=1, scale=1.0, invert=True, mean=0.0, std=DIGITS_PNG_STD
        ),
        description=(
            f"Small CNN (2 conv + max-pool + 2 linear, ReLU) on scikit-learn digits 8x8, input pixel/16; "
            f"held-out accuracy {accuracy:.4f} on {len(data.test_labels)} images (split seed "
            f"{DIGITS_SPLIT_SEED}, training seed {seed}). Sample PNGs store 255 - 15*pixel (dark ink): "
            f"inverting and dividing by {DIGITS_PNG_STD:g} yields the model input exactly."
        ),
    )
    config.save(folder)
    samples = out / "samples"
    samples.mkdir(parents=True, exist_ok=True)
    for digit in range(10):
        index = int(np.flatnonzero(data.test_labels == digit)[0])
        Image.fromarray(png_value(data.test_pixels[index]), mode="L").save(samples / f"digit_{digit}.png")
    return folder, accuracy


def build_breast_cancer(out: Path, seed: int) -> tuple[Path, float]:
    """Train, export and describe ``breast_cancer_mlp``; write the CSV sample. Returns (folder, accuracy)."""
    import torch

    data: BreastCancerData = breast_cancer_data()
    module = _breast_cancer_mlp(len(data.feature_names), len(data.label_names))
    _init_parameters(module, torch.Generator().manual_seed(seed))
    train_inputs = data.to_input(data.train_features)
    _train(
        module,
        train_inputs,
        data.train_labels,
        epochs=60,
        batch_size=32,
        learning_rate=3e-3,
        weight_decay=1e-3,
        rng=np.random.default_rng(seed + 1),
    )
    test_inputs = data.to_input(data.test_features)
    accuracy = _accuracy(module, test_inputs, data.test_labels)
    folder = out / "breast_cancer_mlp"
    folder.mkdir(parents=True, exist_ok=True)
    _export(module, test_inputs[:2], folder)
    config = ModelConfig(
        name="breast_cancer_mlp",
        input_name="input",
        input_shape=(len(data.feature_names),),
        explained_tensor="logits",
        lower=[float(v) for v in train_inputs.min(axis=0)],
        upper=[float(v) for v in train_inputs.max(axis=0)],
        labels=list(data.label_names),
        feature_names=list(data.feature_names),
        preprocessing=Preprocessing(
            kind="tabular", mean=[float(v) for v in data.mean], std=[float(v) for v in data.std]
        ),
        description=(
            f"MLP (30-32-16-2, tanh) on the standardized Wisconsin breast-cancer features; held-out "
            f"accuracy {accuracy:.4f} on {len(data.test_labels)} rows (split seed "
            f"{BREAST_CANCER_SPLIT_SEED}, training seed {seed}). Bounds: min/max of the standardized "
            f"training data."
        ),
    )
    config.save(folder)
    samples = out / "samples"
    samples.mkdir(parents=True, exist_ok=True)
    with (samples / "breast_cancer_rows.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(data.feature_names)
        for row in data.test_features[:5]:
            writer.writerow([repr(float(v)) for v in row])
    return folder, accuracy


def build_all(out: Path | None = None, seed: int = 0) -> BuildReport:
    """Build every demo model into ``out`` (default: the package's own folder).

    Trains on one CPU thread (restored afterwards): the models are tiny, so more threads only
    contend on a busy host, and a fixed thread count keeps the float reductions, hence the
    weights, the same on machines with different core counts.
    """
    import torch

    target = Path(out) if out is not None else repository_path()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        digits_folder, digits_accuracy = build_digits(target, seed)
        cancer_folder, cancer_accuracy = build_breast_cancer(target, seed)
        text_folder, text_accuracy = build_text(target, seed)
    finally:
        torch.set_num_threads(threads)
    return BuildReport(
        folders={"digits_cnn": digits_folder, "breast_cancer_mlp": cancer_folder, TEXT_MODEL: text_folder},
        accuracy={
            "digits_cnn": digits_accuracy,
            "breast_cancer_mlp": cancer_accuracy,
            TEXT_MODEL: text_accuracy,
        },
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m models.demo.build", description=__doc__)
    parser.add_argument("--out", type=Path, default=None, help="output folder (default: models/demo)")
    parser.add_argument("--seed", type=int, default=0, help="training seed (default: 0)")
    args = parser.parse_args(argv)
    report = build_all(args.out, args.seed)
    for name, folder in report.folders.items():
        print(f"{name}: held-out accuracy {report.accuracy[name]:.4f} -> {folder}")
    if report.accuracy["digits_cnn"] < 0.95:
        print(f"digits_cnn accuracy {report.accuracy['digits_cnn']:.4f} is below 0.95", file=sys.stderr)
        return 1
    if report.accuracy[TEXT_MODEL] < 0.95:
        print(f"{TEXT_MODEL} accuracy {report.accuracy[TEXT_MODEL]:.4f} is below 0.95", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
