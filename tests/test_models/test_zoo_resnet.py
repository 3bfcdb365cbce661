"""ONNX gradient graph of the ResNet-18 layout at 224×224 against torch.autograd.

A small batch (4) and one exporter per test keep this affordable. ReLU and max-pool are piecewise
linear: a pre-activation within float rounding of zero takes the other branch in one of the two
implementations, and with about two million ReLU units per image that happens to roughly one
sample in five here (torch itself jumps the same way under a 1e-7 input change). Such a
flip moves a sample's gradient by a few thousandths of its max |g|, whereas a wrong VJP rule moves
every sample by order one. So: at least half the samples (the lower median) must agree at float
precision, and every sample within 5e-2 of its max |g|.
"""

from __future__ import annotations

from types import ModuleType

import numpy as np
import pytest


@pytest.mark.parametrize("dynamo", [True, False], ids=["dynamo", "legacy"])
def test_resnet18_layout_agrees_by_median(zoo: ModuleType, dynamo: bool) -> None:
    outputs, gradients = zoo.compare(zoo.ResNet18(), (4, 3, 224, 224), 1000, dynamo=dynamo)
    assert outputs.worst <= 1e-5, outputs
    lower_median = float(np.sort(gradients.errors)[len(gradients.errors) // 2 - 1])
    assert lower_median <= 1e-5, gradients
    assert gradients.worst <= 5e-2, gradients
