"""The registry of vector-Jacobian rules: one function per ONNX op type.

A rule has the signature ``rule(ctx, node, grads, wrt) -> input_grads``:

- ``ctx``: the :class:`~models.gradient_graph.context.VjpContext` to emit nodes through;
- ``node``: the forward node (rules may ask ``ctx.request_output`` for optional outputs);
- ``grads``: one entry per node output: the name of its gradient, or ``None`` where no gradient
  flows (single-output ops are only called with a gradient);
- ``wrt``: one flag per node input: whether that input needs a gradient.

It returns one entry per node input: the name of that input's gradient contribution, or ``None``
where none is needed or the derivative is zero. A variant it cannot differentiate raises
``ctx.unsupported(node, reason)``: never a wrong graph. :mod:`.common` holds the argument
aliases (``Grads``, ``Wrt``) and the helpers every rule module shares.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import onnx

from models.gradient_graph.context import VjpContext
from models.gradient_graph.rules.common import Grads, Wrt

__all__ = ["VjpRule", "get_rule", "register", "supported_ops"]

VjpRule = Callable[[VjpContext, onnx.NodeProto, Grads, Wrt], Sequence[str | None]]

_RULES: dict[tuple[str, str], VjpRule] = {}


def _domain(domain: str) -> str:
    return "" if domain in ("", "ai.onnx") else domain


def register(*op_types: str, domain: str = "") -> Callable[[VjpRule], VjpRule]:
    """Decorator: register a rule for ``op_types`` of ``domain``."""

    def decorate(rule: VjpRule) -> VjpRule:
        for op_type in op_types:
            key = (_domain(domain), op_type)
            if key in _RULES:
                raise RuntimeError(f"two VJP rules registered for {op_type!r} in domain {domain!r}")
            _RULES[key] = rule
        return rule

    return decorate


def get_rule(op_type: str, domain: str = "") -> VjpRule | None:
    """The rule for an op, or ``None`` if there is none."""
    return _RULES.get((_domain(domain), op_type))


def supported_ops() -> list[str]:
    """The op types with a rule, sorted (``domain:op`` for ops outside the default domain)."""
    return sorted(op if not dom else f"{dom}:{op}" for dom, op in _RULES)
