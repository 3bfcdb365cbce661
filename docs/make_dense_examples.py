"""Make the README's pictures of dense-output targets: ``python docs/make_dense_examples.py [--out DIR]``.

Two small networks are trained here on synthetic images, then explained through the real pipeline
(ONNX export, the gradient graph built from the ONNX graph, ONNX Runtime, the estimator) and drawn
by the CLI's renderer:

- a YOLOv8-style detector head, output ``[batch, 4 + 3, 96]`` (box, then the scores of the classes
  square / ring / cross, for each cell of an 8 × 12 grid), explained with
  ``DetectionTarget()``: the highest class of the highest-scoring detection;
- a text-detection network, output a ``[batch, 1, 48, 192]`` map of "text here" logits, explained
  with ``RegionTarget``: the sum of the map over one word's box.

Seeded and reproducible; about a minute on two CPU cores. Needs torch (the ``torch`` extra).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn

from estimator import DetectionTarget, Method, RegionTarget, explain
from estimator.targets import detection_of, format_region
from models.export import export_torch_module
from models.runtime import GradientSession
from service.cli.render import HeatmapStyle, render_heatmap

CLASSES = ("square", "ring", "cross")
DETECTOR_SHAPE = (32, 48)
STRIDE = 4
TEXT_SHAPE = (48, 192)
METHOD = Method(samples=64, alpha=0.1)


# ------------------------------------------------------------------------------------------ detector


def _draw_object(image: np.ndarray, kind: int, cy: int, cx: int, half: int) -> None:
    ys, xs = np.ogrid[: image.shape[0], : image.shape[1]]
    dy, dx = ys - cy, xs - cx
    if kind == 0:
        shape = (np.abs(dy) <= half) & (np.abs(dx) <= half)
    elif kind == 1:
        radius = np.sqrt(dy**2 + dx**2)
        shape = (radius <= half + 0.5) & (radius >= half - 1.5)
    else:
        shape = ((np.abs(dy) <= 1) & (np.abs(dx) <= half)) | ((np.abs(dx) <= 1) & (np.abs(dy) <= half))
    image[shape] = 0.9


def detector_sample(
    rng: np.random.Generator, objects: int
) -> tuple[np.ndarray, list[tuple[int, int, int, int]]]:
    """An image ``(H, W)`` in [0, 1] and its objects ``(class, cy, cx, half size)`` in distinct grid cells."""
    height, width = DETECTOR_SHAPE
    image = rng.uniform(0.0, 0.15, size=DETECTOR_SHAPE)
    placed: list[tuple[int, int, int, int]] = []
    for _ in range(1000):  # objects apart; a crowded draw just gives fewer
        if len(placed) == objects:
            break
        half = int(rng.integers(3, 6))
        cy, cx = int(rng.integers(half + 1, height - half - 1)), int(rng.integers(half + 1, width - half - 1))
        if all(
            abs(cy - y) > 2 * max(half, h) + 2 or abs(cx - x) > 2 * max(half, h) + 2 for _, y, x, h in placed
        ):
            kind = int(rng.integers(len(CLASSES)))
            _draw_object(image, kind, cy, cx, half)
            placed.append((kind, cy, cx, half))
    return image.astype(np.float32), placed


class YoloStyleHead(nn.Module):
    """Conv backbone, stride 4; per grid cell 4 box values (centre and size, fractions of the image;
    the centre within reach of its cell, as YOLO decodes it) and one sigmoid score per class,
    flattened to ``[batch, 4 + C, cells]`` as YOLOv8 exports it."""

    cells: torch.Tensor
    scale: torch.Tensor
    size: torch.Tensor

    def __init__(self) -> None:
        super().__init__()
        height, width = DETECTOR_SHAPE
        rows, columns = torch.meshgrid(
            torch.arange(height // STRIDE), torch.arange(width // STRIDE), indexing="ij"
        )
        self.register_buffer("cells", torch.stack([columns, rows]).float()[None])  # [1, 2, gh, gw]: x, y
        self.register_buffer("scale", torch.tensor([STRIDE / width, STRIDE / height]).view(1, 2, 1, 1))
        self.register_buffer("size", torch.tensor([12 / width, 12 / height]).view(1, 2, 1, 1))
        self.body = nn.Sequential(
            nn.Conv2d(1, 8, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(8, 16, 3, padding=1, stride=2),
            nn.ReLU(),
            nn.Conv2d(16, 24, 3, padding=1, stride=2),
            nn.ReLU(),
            nn.Conv2d(24, 24, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(24, 4 + len(CLASSES), 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        raw = self.body(x)
        centre = (self.cells + 2 * torch.sigmoid(raw[:, :2]) - 0.5) * self.scale
        size = torch.sigmoid(raw[:, 2:4]) * self.size
        return torch.cat([centre, size, torch.sigmoid(raw[:, 4:])], dim=1).flatten(2)


def _detector_targets(objects: list[tuple[int, int, int, int]]) -> tuple[np.ndarray, np.ndarray]:
    height, width = DETECTOR_SHAPE
    grid_w = width // STRIDE
    scores = np.zeros((len(CLASSES), (height // STRIDE) * grid_w), np.float32)
    boxes = np.full((4, scores.shape[1]), np.nan, np.float32)
    for kind, cy, cx, half in objects:
        cell = (cy // STRIDE) * grid_w + cx // STRIDE
        scores[kind, cell] = 1.0
        boxes[:, cell] = (cx / width, cy / height, (2 * half + 1) / width, (2 * half + 1) / height)
    return scores, boxes


def train_detector(seed: int, steps: int = 500) -> YoloStyleHead:
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    model = YoloStyleHead()
    optimiser = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(steps):
        batch = [detector_sample(rng, int(rng.integers(1, 4))) for _ in range(32)]
        images = torch.tensor(np.stack([image for image, _ in batch])[:, None])
        targets = [_detector_targets(objects) for _, objects in batch]
        scores = torch.tensor(np.stack([s for s, _ in targets]))
        boxes = torch.tensor(np.stack([b for _, b in targets]))
        out = model(images)
        score_loss = nn.functional.binary_cross_entropy(out[:, 4:], scores)
        known = ~torch.isnan(boxes)
        box_loss = (out[:, :4][known] - boxes[known]).abs().mean()
        optimiser.zero_grad()
        (score_loss * 10 + box_loss).backward()
        optimiser.step()
    return model.eval()


def _outline(
    image: np.ndarray, box: tuple[float, float, float, float], colour: tuple[float, float, float]
) -> np.ndarray:
    """``image`` as RGB with the box ``(cx, cy, w, h)`` (fractions of the image) outlined."""
    height, width = image.shape
    rgb = np.repeat(image[..., None], 3, axis=2)
    cx, cy, w, h = box
    top, bottom = int(round((cy - h / 2) * height)) - 1, int(round((cy + h / 2) * height))
    left, right = int(round((cx - w / 2) * width)) - 1, int(round((cx + w / 2) * width))
    top, left = max(top, 0), max(left, 0)
    bottom, right = min(bottom, height - 1), min(right, width - 1)
    rgb[top, left : right + 1] = rgb[bottom, left : right + 1] = colour
    rgb[top : bottom + 1, left] = rgb[top : bottom + 1, right] = colour
    return rgb


def detector_example(out: Path, seed: int) -> Path:
    model = train_detector(seed)
    rng = np.random.default_rng(seed + 1)
    image, objects = detector_sample(rng, 3)
    _, gradient = export_torch_module(
        model, torch.tensor(image[None, None]).repeat(2, 1, 1, 1), dynamo=False, output_names=("detections",)
    )
    session = GradientSession(gradient, device="cpu")
    target = DetectionTarget()
    result = explain(session, image[None], METHOD, target, lower=0.0, upper=1.0, seed=seed)
    detection, class_index = detection_of(target, result.cotangent)
    outputs = np.asarray(result.outputs)
    cx, cy, w, h = (float(v) for v in outputs[:4, detection])
    title = (
        f"YOLO-style head [1, 4+3, 96] · synthetic shapes: {', '.join(CLASSES[k] for k, *_ in objects)}\n"
        f"SmoothGrad(α=0.1, N=64) · class {CLASSES[class_index]} of detection {detection} "
        f"(score {outputs[4 + class_index, detection]:.2f})"
    )
    path = out / "dense_detection.heatmap.png"
    render_heatmap(
        path,
        _outline(image, (cx, cy, w, h), (0.1, 0.8, 0.2)),
        np.asarray(result.attribution)[0],
        title=title,
        style=HeatmapStyle(panel_px=224),
    )
    return path


# -------------------------------------------------------------------------------------- text map


def text_sample(
    rng: np.random.Generator, words: int = 3
) -> tuple[np.ndarray, np.ndarray, list[tuple[int, int, int, int]]]:
    """A line image ``(H, W)``, its text mask and the words' boxes ``(top, bottom, left, right)``."""
    height, width = TEXT_SHAPE
    image = rng.uniform(0.0, 0.2, size=TEXT_SHAPE)
    mask = np.zeros(TEXT_SHAPE, np.float32)
    boxes: list[tuple[int, int, int, int]] = []
    left = int(rng.integers(4, 20))
    for _ in range(words):
        length, top = int(rng.integers(24, 48)), int(rng.integers(6, height - 22))
        glyph_h = int(rng.integers(10, 16))
        if left + length >= width - 4:
            break
        strokes = (rng.random(length) < 0.55) & (np.arange(length) % 3 != 2)  # letters: vertical strokes
        image[top : top + glyph_h, left : left + length][:, strokes] = rng.uniform(0.75, 1.0)
        image[top, left : left + length] = image[top + glyph_h - 1, left : left + length] = 0.8
        mask[top : top + glyph_h, left : left + length] = 1.0
        boxes.append((top, top + glyph_h, left, left + length))
        left += length + int(rng.integers(10, 30))
    for _ in range(int(rng.integers(2, 6))):  # specks that are not text
        y, x = int(rng.integers(0, height - 3)), int(rng.integers(0, width - 3))
        image[y : y + 2, x : x + 2] = 0.9
    return image.astype(np.float32), mask, boxes


def train_text_detector(seed: int, steps: int = 300) -> nn.Module:
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    model = nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(8, 8, 3, padding=2, dilation=2),
        nn.ReLU(),
        nn.Conv2d(8, 8, 3, padding=4, dilation=4),
        nn.ReLU(),
        nn.Conv2d(8, 1, 3, padding=1),
    )
    optimiser = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(steps):
        batch = [text_sample(rng) for _ in range(8)]
        images = torch.tensor(np.stack([image for image, _, _ in batch])[:, None])
        masks = torch.tensor(np.stack([mask for _, mask, _ in batch])[:, None])
        loss = nn.functional.binary_cross_entropy_with_logits(model(images), masks)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    return model.eval()


def text_map_example(out: Path, seed: int) -> Path:
    model = train_text_detector(seed)
    rng = np.random.default_rng(seed + 2)
    image, _, boxes = text_sample(rng)
    _, gradient = export_torch_module(
        model, torch.tensor(image[None, None]).repeat(2, 1, 1, 1), dynamo=False, output_names=("text_logits",)
    )
    session = GradientSession(gradient, device="cpu")
    top, bottom, left, right = boxes[1]  # the middle word
    axes = (0, slice(top, bottom), slice(left, right))
    result = explain(session, image[None], METHOD, RegionTarget(axes=axes), lower=0.0, upper=1.0, seed=seed)
    title = (
        f"text detector, map [1, 1, 48, 192] · a synthetic line of {len(boxes)} words\n"
        f"SmoothGrad(α=0.1, N=64) · the sum over {format_region(axes)} (the middle word)"
    )
    path = out / "dense_text_region.heatmap.png"
    render_heatmap(
        path, image, np.asarray(result.attribution)[0], title=title, style=HeatmapStyle(panel_px=384)
    )
    return path


def _shrink(path: Path) -> None:
    """Re-save with a 256-colour palette: a fraction of the bytes, no visible change at this size."""
    Image.open(path).convert("RGB").quantize(colors=256, method=Image.Quantize.MEDIANCUT).save(
        path, optimize=True
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "images")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(2)
    for path in (detector_example(args.out, args.seed), text_map_example(args.out, args.seed)):
        _shrink(path)
        print(f"wrote {path} ({path.stat().st_size // 1024} KiB)")


if __name__ == "__main__":
    main()
