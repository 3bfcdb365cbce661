"""ONNX gradient graph of the ResNet-18 layout at 224×224 against torch.autograd.

A small batch (3) and one exporter per test keep this affordable. ReLU and max-pool are piecewise
linear: a sample within rounding of a kink may flip (SPEC.md §5), so the median of the per-sample
relative errors must be at float precision (3 samples: two of three agree).
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest


def _load_zoo() -> ModuleType:
    name = "mollify_tests_zoo_modules"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, Path(__file__).with_name("zoo_modules.py"))
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


zoo = _load_zoo()


@pytest.mark.parametrize("dynamo", [True, False], ids=["dynamo", "legacy"])
def test_resnet18_layout_agrees_by_median(dynamo: bool) -> None:
    outputs, gradients = zoo.compare(zoo.ResNet18(), (3, 3, 224, 224), 1000, dynamo=dynamo)
    assert outputs.median <= 1e-5, outputs
    assert gradients.median <= 1e-5, gradients
