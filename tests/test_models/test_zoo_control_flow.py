"""Data-dependent branches exported to ONNX If, against torch.autograd for each branch.

The dynamo exporter writes ``torch.cond`` as an If whose branches read the input and the weights
from the enclosing graph; the legacy exporter writes a scripted module's ``if`` as an If with
Constant nodes inside the branches. The condition (the sign of the batch's sum) is one value per
batch, so each test feeds a batch that takes one branch throughout.
"""

from __future__ import annotations

from types import ModuleType
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

BRANCHES = pytest.mark.parametrize("sign", [1.0, -1.0], ids=["then", "else"])


def _then(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    return torch.tanh(module.a(x)) * x.sum(dim=1, keepdim=True)


def _else(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    return torch.sigmoid(module.b(x * x)) * 2.0


class CondBranches(nn.Module):
    """``torch.cond`` on the batch's sum: the dynamo exporter's If."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = nn.Linear(6, 4), nn.Linear(6, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cond(x.sum() > 0, lambda t: _then(self, t), lambda t: _else(self, t), (x,))


class ScriptedBranches(nn.Module):
    """A Python ``if`` on the batch's sum, scripted: the legacy exporter's If."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = nn.Linear(6, 4), nn.Linear(6, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if bool(x.sum() > 0):
            return torch.tanh(self.a(x)) * x.sum(dim=1, keepdim=True)
        return torch.sigmoid(self.b(x * x)) * 2.0


def _agreement(zoo: ModuleType, module: nn.Module, sign: float, dynamo: bool) -> tuple[Any, Any]:
    inputs = zoo.random_input((5, 6), 1, 0.1, 1.0) * sign
    cotangents = zoo.one_hot_cotangents(5, 4, 2)
    onnx_outputs, onnx_gradients = zoo.onnx_gradient(module, inputs, cotangents, dynamo=dynamo)
    torch_outputs, torch_gradients = zoo.torch_input_gradient(module, inputs, torch.from_numpy(cotangents))
    assert np.abs(torch_gradients).max() > 0
    return zoo.agreement(onnx_outputs, torch_outputs), zoo.agreement(onnx_gradients, torch_gradients)


@BRANCHES
def test_torch_cond_exported_by_dynamo_agrees_on_every_sample(zoo: ModuleType, sign: float) -> None:
    outputs, gradients = _agreement(zoo, zoo.init_module(CondBranches(), 0), sign, dynamo=True)
    assert outputs.worst <= 1e-5, outputs
    assert gradients.worst <= 1e-5, gradients


@BRANCHES
def test_scripted_if_exported_by_the_legacy_exporter_agrees_on_every_sample(
    zoo: ModuleType, sign: float
) -> None:
    scripted = torch.jit.script(zoo.init_module(ScriptedBranches(), 0))
    outputs, gradients = _agreement(zoo, scripted, sign, dynamo=False)
    assert outputs.worst <= 1e-5, outputs
    assert gradients.worst <= 1e-5, gradients
