"""What every VJP rule module shares: the argument aliases of the rule signature and the helpers
for the contract of :mod:`models.gradient_graph.rules.registry`."""

from __future__ import annotations

from collections.abc import Sequence

import onnx

from models.gradient_graph.context import VjpContext

__all__ = ["Grads", "Wrt", "output_grad", "per_input", "refuse_parameter_gradients"]

#: One entry per node output: the name of its gradient, or ``None`` where no gradient flows.
Grads = Sequence[str | None]
#: One flag per node input: whether that input needs a gradient.
Wrt = Sequence[bool]


def output_grad(grads: Grads) -> str:
    """The gradient of a node's first output (the builder calls single-output rules only with one)."""
    grad = grads[0]
    if grad is None:
        raise RuntimeError("rule called without an output gradient")
    return grad


def per_input(node: onnx.NodeProto, leading: Sequence[str | None]) -> list[str | None]:
    """``leading`` (the gradients of the first inputs), then ``None`` for each remaining input of ``node``."""
    return [*leading] + [None] * (len(node.input) - len(leading))


def refuse_parameter_gradients(ctx: VjpContext, node: onnx.NodeProto, wrt: Wrt, parameters: str) -> None:
    """Raise UnsupportedOpError when an input after the first (``parameters``, e.g. "weights or
    bias") depends on the differentiated inputs: only the data input is differentiated."""
    if any(wrt[1:]):
        raise ctx.unsupported(
            node,
            f"its {parameters} depend on the differentiated input (only the data input is differentiated)",
        )
