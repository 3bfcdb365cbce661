"""ONNX gradient graphs against torch.autograd: a transformer encoder block and a mobile block.

The encoder block (LayerNorm, GELU, softmax attention, residuals, positional embeddings) is smooth:
every sample must agree to 1e-5 of max|g|. The mobile block (depthwise conv, HardSwish,
squeeze-excite with HardSigmoid) is piecewise linear: median at float precision, most samples close.
"""

from __future__ import annotations

from types import ModuleType

import pytest

EXPORTERS = pytest.mark.parametrize("dynamo", [True, False], ids=["dynamo", "legacy"])


@EXPORTERS
@pytest.mark.parametrize("act", ["gelu", "gelu_tanh"])
def test_transformer_encoder_block_agrees_on_every_sample(zoo: ModuleType, act: str, dynamo: bool) -> None:
    outputs, gradients = zoo.compare(zoo.EncoderBlock(act=act), (8, 12, 32), 6, dynamo=dynamo)
    assert outputs.worst <= 1e-5, outputs
    assert gradients.worst <= 1e-5, gradients


@EXPORTERS
def test_mobile_block_agrees_by_median(zoo: ModuleType, dynamo: bool) -> None:
    outputs, gradients = zoo.compare(zoo.MobileBlock(), (8, 3, 32, 32), 8, dynamo=dynamo)
    assert outputs.median <= 1e-5, outputs
    assert gradients.median <= 1e-5, gradients
    assert gradients.fraction_within(1e-4) >= 0.75, gradients


@EXPORTERS
def test_smooth_mobile_block_agrees_on_every_sample(zoo: ModuleType, dynamo: bool) -> None:
    outputs, gradients = zoo.compare(zoo.MobileBlock(act="silu"), (8, 3, 32, 32), 8, dynamo=dynamo)
    assert outputs.worst <= 1e-5, outputs
    # HardSigmoid in squeeze-excite stays piecewise linear; its kinks are at ±3, far from these scales.
    assert gradients.median <= 1e-5, gradients
