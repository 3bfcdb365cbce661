"""ONNX gradient graphs against torch.autograd: MLPs and a small CNN, both exporters.

Smooth activations must agree to 1e-5 of max|g| on every sample; piecewise-linear ones (ReLU,
max-pool) may flip a mask for an input within rounding of a kink, so there the
per-sample median must be at float precision and most samples close.
"""

from __future__ import annotations

from types import ModuleType

import pytest

EXPORTERS = pytest.mark.parametrize("dynamo", [True, False], ids=["dynamo", "legacy"])


@EXPORTERS
@pytest.mark.parametrize("act", ["tanh", "sigmoid", "gelu", "gelu_tanh"])
def test_smooth_mlp_agrees_on_every_sample(zoo: ModuleType, act: str, dynamo: bool) -> None:
    outputs, gradients = zoo.compare(zoo.mlp(act), (32, 20), 5, dynamo=dynamo)
    assert outputs.worst <= 1e-5, outputs
    assert gradients.worst <= 1e-5, gradients


@EXPORTERS
def test_relu_mlp_agrees_by_median(zoo: ModuleType, dynamo: bool) -> None:
    outputs, gradients = zoo.compare(zoo.mlp("relu"), (32, 20), 5, dynamo=dynamo)
    assert outputs.worst <= 1e-5, outputs
    assert gradients.median <= 1e-5, gradients
    assert gradients.fraction_within(1e-4) >= 0.9, gradients


@EXPORTERS
def test_smooth_cnn_with_batchnorm_and_avgpool_agrees_on_every_sample(zoo: ModuleType, dynamo: bool) -> None:
    module = zoo.SmallCNN("gelu", max_pool=False)
    outputs, gradients = zoo.compare(module, (16, 3, 16, 16), 7, dynamo=dynamo)
    assert outputs.worst <= 1e-5, outputs
    assert gradients.worst <= 1e-5, gradients


@EXPORTERS
def test_relu_cnn_with_batchnorm_maxpool_avgpool_agrees_by_median(zoo: ModuleType, dynamo: bool) -> None:
    outputs, gradients = zoo.compare(zoo.SmallCNN("relu", max_pool=True), (16, 3, 16, 16), 7, dynamo=dynamo)
    assert outputs.median <= 1e-5, outputs
    assert gradients.median <= 1e-5, gradients
    assert gradients.fraction_within(1e-4) >= 0.8, gradients
