"""VJP rule of Einsum: the gradient of each operand is another Einsum.

For ``y = einsum("A,B->O", a, b)`` the gradient of ``a`` is ``einsum("O,B->A", g, b)``: every
index of ``a`` that appears in the output or another operand is recovered; indices summed away
in ``a`` alone are broadcast back with ``Expand``. Diagonals (an index repeated within one
operand) and broadcasting inside ``...`` are not supported.
"""

from __future__ import annotations

import onnx

from models.gradient_graph.context import VjpContext, get_attr
from models.gradient_graph.rules.common import Grads, Wrt, output_grad
from models.gradient_graph.rules.registry import register

_ELLIPSIS = "."  # one placeholder character for "..." while parsing


def _parse(equation: str) -> tuple[list[str], str]:
    compact = equation.replace(" ", "").replace("...", _ELLIPSIS)
    if "->" in compact:
        lhs, rhs = compact.split("->")
    else:
        lhs = compact
        letters = [c for c in lhs.replace(",", "") if c.isalpha()]
        rhs = (_ELLIPSIS if _ELLIPSIS in lhs else "") + "".join(
            sorted(c for c in set(letters) if letters.count(c) == 1)
        )
    return lhs.split(","), rhs


def _text(term: str) -> str:
    return term.replace(_ELLIPSIS, "...")


@register("Einsum")
def einsum(ctx: VjpContext, node: onnx.NodeProto, grads: Grads, wrt: Wrt) -> list[str | None]:
    g = output_grad(grads)
    terms, output = _parse(str(get_attr(node, "equation", "")))
    if len(terms) != len(node.input):
        raise ctx.unsupported(node, f"the equation has {len(terms)} operands for {len(node.input)} inputs")
    out: list[str | None] = [None] * len(node.input)
    for i, (term, needed) in enumerate(zip(terms, wrt, strict=True)):
        if not needed:
            continue
        letters = [c for c in term if c != _ELLIPSIS]
        if len(set(letters)) != len(letters):
            raise ctx.unsupported(node, f"operand {i} repeats an index ({term!r}: a diagonal)")
        if _ELLIPSIS in term:
            _require_unbroadcast_ellipsis(ctx, node, i, terms)
        others = [t for j, t in enumerate(terms) if j != i]
        available = set(output) | set("".join(others))
        kept = "".join(c for c in term if c in available or c == _ELLIPSIS)
        equation = ",".join([_text(output), *(_text(t) for t in others)]) + "->" + _text(kept)
        operands = [g, *(name for j, name in enumerate(node.input) if j != i)]
        grad = ctx.op("Einsum", operands, equation=equation)
        if kept != term:
            # Indices summed away in this operand alone: the gradient is constant along them.
            lost = [k for k, c in enumerate(term) if c not in kept]
            if _ELLIPSIS in term:
                raise ctx.unsupported(node, f"operand {i} sums an index away next to '...'")
            grad = ctx.op("Expand", [ctx.unsqueeze(grad, lost), ctx.shape_of(node.input[i])])
        out[i] = grad
    return out


def _require_unbroadcast_ellipsis(ctx: VjpContext, node: onnx.NodeProto, i: int, terms: list[str]) -> None:
    """'...' must cover the same dims in every operand (no broadcasting inside it)."""
    spans = []
    for name, term in zip(node.input, terms, strict=True):
        if _ELLIPSIS not in term:
            continue
        shape = ctx.shape(name)
        if shape is None:
            raise ctx.need_static(node, f"the rank of Einsum operand {name!r}")
        start = term.index(_ELLIPSIS)
        width = len(shape) - (len(term) - 1)
        spans.append(tuple(shape[start : start + width]))
    if any(span != spans[0] or any(d is None for d in span) for span in spans):
        raise ctx.unsupported(node, f"operand {i}'s '...' dims are broadcast or unknown")
