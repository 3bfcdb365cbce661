"""The gradient-graph builder's exception tree (transport-free; the service maps it to status codes)."""

from __future__ import annotations

from collections.abc import Mapping

import onnx

__all__ = ["GradientGraphError", "InvalidModelError", "UnsupportedOpError", "unsupported_op"]


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
        opset: the opset version of that domain in the model file (before any upgrade).
        reason: what exactly is not supported.
        upgraded_to: the opset the builder upgraded the model to before differentiating, when it did.
    """

    def __init__(
        self,
        op_type: str,
        node_name: str,
        domain: str,
        opset: int,
        reason: str,
        hint: str,
        *,
        upgraded_to: int | None = None,
    ) -> None:
        self.op_type = op_type
        self.node_name = node_name
        self.domain = domain or "ai.onnx"
        self.opset = opset
        self.reason = reason
        self.upgraded_to = upgraded_to if upgraded_to != opset else None
        upgrade = f", upgraded to {self.upgraded_to} to differentiate" if self.upgraded_to is not None else ""
        super().__init__(
            f"cannot differentiate through {op_type} node {node_name!r} "
            f"(domain {self.domain}, opset {opset} in the model file{upgrade}): {reason}. {hint}"
        )


def unsupported_op(
    node: onnx.NodeProto,
    node_name: str,
    file_opsets: Mapping[str, int],
    opsets: Mapping[str, int],
    reason: str,
    hint: str,
) -> UnsupportedOpError:
    """The error for ``node``, quoting its domain's opset in the model file and any upgrade of it.

    Args:
        file_opsets, opsets: opset per domain (``""``: default) of the model file and of the
            model being differentiated (after the builder's upgrade).
    """
    domain = "" if node.domain == "ai.onnx" else node.domain
    in_file = int(file_opsets.get(domain, file_opsets.get("", 0)))
    now = int(opsets.get(domain, opsets.get("", 0)))
    return UnsupportedOpError(node.op_type, node_name, node.domain, in_file, reason, hint, upgraded_to=now)


def describe_node(node: onnx.NodeProto, index: int | None = None) -> str:
    """A human-readable name for a node: its name, else its position and first output."""
    if node.name:
        return node.name
    where = f"#{index} " if index is not None else ""
    first = next((o for o in node.output if o), "?")
    return f"{where}(unnamed, output {first!r})"
