"""Reference PyTorch modules and comparison helpers for the autograd zoo tests.

The ``test_zoo_*`` files get it through the ``zoo`` fixture of ``conftest.py``; benchmarks import it
as ``tests.test_models.zoo_modules``. Weights are random but seeded through an explicit
``torch.Generator``; nothing touches global random state. torchvision does not import beside
torch 2.13 CPU, so the ResNet-18 layout is written by hand.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

# --------------------------------------------------------------------------- initialisation


def init_module(module: nn.Module, seed: int) -> nn.Module:
    """Re-draw every parameter and BatchNorm statistic from ``torch.Generator(seed)``; eval mode."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for layer in module.modules():
            if isinstance(layer, (nn.Conv2d, nn.Linear)):
                fan_in = layer.weight[0].numel()
                nn.init.normal_(layer.weight, 0.0, math.sqrt(2.0 / fan_in), generator=generator)
                if layer.bias is not None:
                    nn.init.uniform_(layer.bias, -0.1, 0.1, generator=generator)
            elif isinstance(layer, (nn.BatchNorm2d, nn.LayerNorm)):
                if layer.weight is not None:
                    nn.init.uniform_(layer.weight, 0.5, 1.5, generator=generator)
                if layer.bias is not None:
                    nn.init.uniform_(layer.bias, -0.2, 0.2, generator=generator)
                if isinstance(layer, nn.BatchNorm2d):
                    assert layer.running_mean is not None and layer.running_var is not None
                    nn.init.uniform_(layer.running_mean, -0.2, 0.2, generator=generator)
                    nn.init.uniform_(layer.running_var, 0.5, 1.5, generator=generator)
            elif isinstance(layer, nn.Embedding):
                nn.init.normal_(layer.weight, 0.0, 0.5, generator=generator)
    return module.eval()


def random_input(shape: tuple[int, ...], seed: int, low: float = -1.0, high: float = 1.0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.rand(shape, generator=generator) * (high - low) + low


# --------------------------------------------------------------------------- the zoo


def activation(name: str) -> nn.Module:
    return {
        "relu": nn.ReLU(),
        "tanh": nn.Tanh(),
        "sigmoid": nn.Sigmoid(),
        "gelu": nn.GELU(),
        "gelu_tanh": nn.GELU(approximate="tanh"),
        "silu": nn.SiLU(),
        "hardswish": nn.Hardswish(),
    }[name]


def mlp(act: str = "relu", features: int = 20, classes: int = 5) -> nn.Module:
    return nn.Sequential(
        nn.Linear(features, 64), activation(act), nn.Linear(64, 32), activation(act), nn.Linear(32, classes)
    )


class SmallCNN(nn.Module):
    """Conv-BN-act, max-pool (overlapping 3×3 stride 2), conv-BN-act, avg-pool, linear. Input (3, 16, 16)."""

    def __init__(self, act: str = "relu", max_pool: bool = True, classes: int = 7) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(8)
        self.act1 = activation(act)
        self.pool1: nn.Module = (
            nn.MaxPool2d(3, stride=2, padding=1) if max_pool else nn.AvgPool2d(3, stride=2, padding=1)
        )
        self.conv2 = nn.Conv2d(8, 16, 3, stride=1, padding=2, dilation=2)
        self.bn2 = nn.BatchNorm2d(16)
        self.act2 = activation(act)
        self.pool2 = nn.AvgPool2d(2)
        self.fc = nn.Linear(16 * 4 * 4, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool1(self.act1(self.bn1(self.conv1(x))))
        x = self.pool2(self.act2(self.bn2(self.conv2(x))))
        return self.fc(torch.flatten(x, 1))


class BasicBlock(nn.Module):
    def __init__(self, inplanes: int, planes: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample: nn.Module | None = None
        if stride != 1 or inplanes != planes:
            self.downsample = nn.Sequential(
                nn.Conv2d(inplanes, planes, 1, stride=stride, bias=False), nn.BatchNorm2d(planes)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + identity)


class ResNet18(nn.Module):
    """torchvision's ResNet-18 layout: 7×7 stem, max-pool, 4 stages of 2 basic blocks, GAP, fc.

    ``width`` is the stem's channel count (64 in torchvision; smaller for quick runs).
    """

    def __init__(self, classes: int = 1000, width: int = 64) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, width, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        stages = []
        inplanes = width
        for factor, stride in ((1, 1), (2, 2), (4, 2), (8, 2)):
            planes = width * factor
            stages.append(nn.Sequential(BasicBlock(inplanes, planes, stride), BasicBlock(planes, planes, 1)))
            inplanes = planes
        self.layers = nn.Sequential(*stages)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(inplanes, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(F.relu(self.bn1(self.conv1(x))))
        x = self.avgpool(self.layers(x))
        return self.fc(torch.flatten(x, 1))


class Bottleneck(nn.Module):
    """torchvision's ResNet bottleneck (v1.5: the stride on the 3×3 convolution), expansion 4."""

    def __init__(self, inplanes: int, planes: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * 4)
        self.downsample: nn.Module | None = None
        if stride != 1 or inplanes != planes * 4:
            self.downsample = nn.Sequential(
                nn.Conv2d(inplanes, planes * 4, 1, stride=stride, bias=False), nn.BatchNorm2d(planes * 4)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return F.relu(out + identity)


class ResNet50(nn.Module):
    """torchvision's ResNet-50 layout: 7×7 stem, max-pool, stages of 3, 4, 6, 3 bottlenecks, GAP, fc.

    ``width`` is the stem's channel count (64 in torchvision: 25.6 M parameters at 1000 classes).
    """

    def __init__(self, classes: int = 1000, width: int = 64) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, width, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        stages = []
        inplanes = width
        for factor, blocks, stride in ((1, 3, 1), (2, 4, 2), (4, 6, 2), (8, 3, 2)):
            planes = width * factor
            layers = [Bottleneck(inplanes, planes, stride)]
            layers += [Bottleneck(planes * 4, planes, 1) for _ in range(blocks - 1)]
            stages.append(nn.Sequential(*layers))
            inplanes = planes * 4
        self.layers = nn.Sequential(*stages)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(inplanes, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(F.relu(self.bn1(self.conv1(x))))
        x = self.avgpool(self.layers(x))
        return self.fc(torch.flatten(x, 1))


class EncoderBlock(nn.Module):
    """A pre-norm transformer encoder block over embedded tokens (B, seq, dim) → class logits.

    Positional embeddings are looked up with ``nn.Embedding`` on ``arange(seq)`` (a Gather the
    dynamo exporter folds into a constant, the legacy one keeps); the head reads the mean token plus
    the first token;
    attention is written out (scaled scores, Softmax, weighted sum) so both exporters see plain ops.
    """

    def __init__(
        self, seq: int = 12, dim: int = 32, heads: int = 4, classes: int = 6, act: str = "gelu"
    ) -> None:
        super().__init__()
        self.heads = heads
        self.positions = nn.Embedding(seq, dim)
        self.norm1 = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.norm2 = nn.LayerNorm(dim)
        self.ff1 = nn.Linear(dim, 2 * dim)
        self.act = activation(act)
        self.ff2 = nn.Linear(2 * dim, dim)
        self.norm3 = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, seq, dim = x.shape
        x = x + self.positions(torch.arange(seq, device=x.device))
        q, k, v = self.qkv(self.norm1(x)).chunk(3, dim=-1)
        head_dim = dim // self.heads

        def split(t: torch.Tensor) -> torch.Tensor:
            return t.reshape(batch, seq, self.heads, head_dim).transpose(1, 2)

        scores = split(q) @ split(k).transpose(-2, -1) / math.sqrt(head_dim)
        attended = (scores.softmax(dim=-1) @ split(v)).transpose(1, 2).reshape(batch, seq, dim)
        x = x + self.proj(attended)
        x = x + self.ff2(self.act(self.ff1(self.norm2(x))))
        x = self.norm3(x)
        # The first token read by index puts a Gather (or Slice) on the differentiated path.
        return self.head(x.mean(dim=1) + x[:, 0])


class SqueezeExcite(nn.Module):
    def __init__(self, channels: int, reduced: int) -> None:
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.reduce = nn.Conv2d(channels, reduced, 1)
        self.expand = nn.Conv2d(reduced, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale = F.hardsigmoid(self.expand(F.relu(self.reduce(self.pool(x)))))
        return x * scale


class MobileBlock(nn.Module):
    """MobileNetV3-style: stem, inverted residual (expand, depthwise 3×3, SE, project), HardSwish, head."""

    def __init__(
        self, channels: int = 16, expansion: int = 4, classes: int = 8, act: str = "hardswish"
    ) -> None:
        super().__init__()
        hidden = channels * expansion
        self.stem = nn.Sequential(
            nn.Conv2d(3, channels, 3, stride=2, padding=1, bias=False),
            nn.BatchNorm2d(channels),
            activation(act),
        )
        self.expand = nn.Sequential(
            nn.Conv2d(channels, hidden, 1, bias=False), nn.BatchNorm2d(hidden), activation(act)
        )
        self.depthwise = nn.Sequential(
            nn.Conv2d(hidden, hidden, 3, padding=1, groups=hidden, bias=False),
            nn.BatchNorm2d(hidden),
            activation(act),
        )
        self.se = SqueezeExcite(hidden, hidden // 4)
        self.project = nn.Sequential(nn.Conv2d(hidden, channels, 1, bias=False), nn.BatchNorm2d(channels))
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Linear(channels, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        x = x + self.project(self.se(self.depthwise(self.expand(x))))
        return self.head(torch.flatten(self.pool(x), 1))


# --------------------------------------------------------------------------- comparison


def torch_input_gradient(
    module: nn.Module, inputs: torch.Tensor, cotangents: torch.Tensor
) -> tuple[np.ndarray, np.ndarray]:
    """``(outputs, J^T · cotangent)`` per sample by ``torch.autograd.grad``, float32 arrays."""
    x = inputs.detach().clone().requires_grad_(True)
    outputs = module(x)
    (gradient,) = torch.autograd.grad(outputs, x, grad_outputs=cotangents)
    return outputs.detach().numpy(), gradient.detach().numpy()


@dataclass(frozen=True)
class Agreement:
    """Per-sample error of an ONNX gradient against torch, relative to the sample's max |g|."""

    errors: np.ndarray

    @property
    def median(self) -> float:
        return float(np.median(self.errors))

    @property
    def worst(self) -> float:
        return float(np.max(self.errors))

    def fraction_within(self, tolerance: float) -> float:
        return float(np.mean(self.errors <= tolerance))

    def __str__(self) -> str:
        every = np.array2string(self.errors, precision=2)
        return f"per-sample relative errors: median {self.median:.2e}, max {self.worst:.2e}, all {every}"


def agreement(actual: np.ndarray, expected: np.ndarray) -> Agreement:
    batch = expected.shape[0]
    difference = np.abs(actual.reshape(batch, -1).astype(np.float64) - expected.reshape(batch, -1))
    scale = np.abs(expected.reshape(batch, -1)).max(axis=1)
    return Agreement(difference.max(axis=1) / np.maximum(scale, np.finfo(np.float32).tiny))


def one_hot_cotangents(batch: int, classes: int, seed: int) -> np.ndarray:
    """Random one-hot rows, float32 ``(batch, classes)`` (the classic "gradient of logit c")."""
    rng = np.random.default_rng(seed)
    cotangents = np.zeros((batch, classes), dtype=np.float32)
    cotangents[np.arange(batch), rng.integers(0, classes, size=batch)] = 1.0
    return cotangents


def onnx_gradient(
    module: nn.Module, inputs: torch.Tensor, cotangents: np.ndarray, *, dynamo: bool
) -> tuple[np.ndarray, np.ndarray]:
    """Export ``module``, build its gradient graph, run it in a GradientSession: ``(outputs, gradients)``."""
    from models.export import export_torch_module
    from models.runtime import GradientSession

    _, gradient = export_torch_module(module, inputs, dynamo=dynamo)
    session = GradientSession(gradient, device="cpu")
    result = session(inputs.numpy(), cotangents)
    return result.outputs, result.gradients


def compare(
    module: nn.Module, shape: tuple[int, ...], classes: int, *, dynamo: bool, seed: int = 0
) -> tuple[Agreement, Agreement]:
    """Agreement of the ONNX outputs and input gradients with torch's, for a random batch of ``shape``."""
    init_module(module, seed)
    inputs = random_input(shape, seed + 1)
    cotangents = one_hot_cotangents(shape[0], classes, seed + 2)
    onnx_outputs, onnx_gradients = onnx_gradient(module, inputs, cotangents, dynamo=dynamo)
    torch_outputs, torch_gradients = torch_input_gradient(module, inputs, torch.from_numpy(cotangents))
    return agreement(onnx_outputs, torch_outputs), agreement(onnx_gradients, torch_gradients)
