"""ONNX gradient graphs of torch.nn.LSTM / GRU / RNN classifiers against torch.autograd, both exporters.

Both exporters emit one LSTM/GRU/RNN node per layer (bidirectional layers as one node with
``direction="bidirectional"``), the legacy one with zero initial states from ConstantOfShape, the
dynamo one from Expand. The classifiers read the last step of ``Y`` and the final hidden (and
cell) state of the last layer, so every output of the nodes carries gradient; initial states
computed from the input carry gradient back to it. Smooth models
agree to 1e-5 of max|g| on every sample; the ReLU RNN by median.
"""

from __future__ import annotations

from types import ModuleType

import pytest
import torch
from torch import nn

EXPORTERS = pytest.mark.parametrize("dynamo", [True, False], ids=["dynamo", "legacy"])


class RecurrentClassifier(nn.Module):
    """``(B, T, features)`` -> class logits through a recurrent stack.

    Args:
        kind: ``"LSTM"``, ``"GRU"`` or ``"RNN"``.
        batch_first: the recurrent module's layout (the input stays batch first; else it is transposed).
        state_from_input: initial states computed from the input (their gradient flows to it).
    """

    def __init__(
        self,
        kind: str,
        *,
        batch_first: bool = True,
        bidirectional: bool = False,
        layers: int = 1,
        state_from_input: bool = False,
        features: int = 6,
        hidden: int = 8,
        classes: int = 4,
        **options: str,
    ) -> None:
        super().__init__()
        self.kind, self.batch_first, self.layers = kind, batch_first, layers
        self.directions = 2 if bidirectional else 1
        self.rnn = getattr(nn, kind)(
            features,
            hidden,
            num_layers=layers,
            batch_first=batch_first,
            bidirectional=bidirectional,
            **options,
        )
        self.state = nn.Linear(features, hidden * layers * self.directions) if state_from_input else None
        self.fc = nn.Linear(self.directions * hidden + hidden * (2 if kind == "LSTM" else 1), classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        seq = x if self.batch_first else x.transpose(0, 1)
        initial = None
        if self.state is not None:
            h0 = torch.tanh(self.state(x.mean(dim=1)))  # (B, layers*D*H)
            h0 = h0.reshape(x.shape[0], self.layers * self.directions, -1).transpose(0, 1).contiguous()
            initial = (h0, torch.sin(h0)) if self.kind == "LSTM" else h0
        out, state = self.rnn(seq, initial)
        last = out[:, -1] if self.batch_first else out[-1]
        finals = [state[0][-1], state[1][-1]] if self.kind == "LSTM" else [state[-1]]
        return self.fc(torch.cat([last, *finals], dim=1))


def seeded(module: RecurrentClassifier, seed: int = 3) -> RecurrentClassifier:
    """Uniform(-0.4, 0.4) recurrent weights from ``torch.Generator(seed)`` (the zoo initialises the rest)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in module.rnn.parameters():
            parameter.copy_(torch.rand(parameter.shape, generator=generator) * 0.8 - 0.4)
    return module


SHAPE = (6, 7, 6)  # batch, time, features
CONFIGS = {
    "batch-first-bidirectional-2-layers-states-from-input": {
        "batch_first": True,
        "bidirectional": True,
        "layers": 2,
        "state_from_input": True,
    },
    "time-first-1-layer": {"batch_first": False},
}


@EXPORTERS
@pytest.mark.parametrize("config", list(CONFIGS), ids=list(CONFIGS))
@pytest.mark.parametrize("kind", ["LSTM", "GRU", "RNN"])
def test_recurrent_classifier_agrees_on_every_sample(
    zoo: ModuleType, kind: str, config: str, dynamo: bool
) -> None:
    module = seeded(RecurrentClassifier(kind, **CONFIGS[config]))  # type: ignore[arg-type]
    outputs, gradients = zoo.compare(module, SHAPE, 4, dynamo=dynamo)
    assert outputs.worst <= 1e-5, outputs
    assert gradients.worst <= 1e-5, gradients


@EXPORTERS
def test_relu_rnn_agrees_by_median(zoo: ModuleType, dynamo: bool) -> None:
    module = seeded(RecurrentClassifier("RNN", bidirectional=True, layers=2, nonlinearity="relu"))
    outputs, gradients = zoo.compare(module, SHAPE, 4, dynamo=dynamo)
    assert outputs.worst <= 1e-5, outputs
    assert gradients.median <= 1e-5, gradients
    assert gradients.fraction_within(1e-4) >= 0.8, gradients
