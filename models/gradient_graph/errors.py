"""The gradient-graph builder's exception tree (transport-free; the service maps it to status codes)."""

from __future__ import annotations

import onnx

__all__ = ["GradientGraphError", "InvalidModelError", "UnsupportedOpError"]


class GradientGraphError(ValueError):
    """Base of every error the gradient-graph builder raises on purpose."""


class InvalidModelError(GradientGraphError):
    """The model or an argument is unusable: truncated file, non-float input, unknown tensor name..."""


class UnsupportedOpError(GradientGraphError):
    """An op on the differentiated path has no vector-Jacobian rule, or uses an unsupported variant.

    Attributes:
        op_type: the ONNX op type, e.g. ``"NonMaxSuppression"``.
        node_name: the node's name (or a description of it when the node is unnamed).
        domain: the op's domain (``"ai.onnx"`` for the default domain).
        opset: the opset version of that domain in the model.
        reason: what exactly is not supported.
    """

    def __init__(self, op_type: str, node_name: str, domain: str, opset: int, reason: str, hint: str) -> None:
        self.op_type = op_type
        self.node_name = node_name
        self.domain = domain or "ai.onnx"
        self.opset = opset
        self.reason = reason
        super().__init__(
            f"cannot differentiate through {op_type} node {node_name!r} "
            f"(domain {self.domain}, opset {opset}): {reason}. {hint}"
        )


def describe_node(node: onnx.NodeProto, index: int | None = None) -> str:
    """A human-readable name for a node: its name, else its position and first output."""
    if node.name:
        return node.name
    where = f"#{index} " if index is not None else ""
    first = next((o for o in node.output if o), "?")
    return f"{where}(unnamed, output {first!r})"
