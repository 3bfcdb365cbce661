"""Preparing If nodes for differentiation: constants out of branches, constant conditions folded.

* A ``Constant`` node inside an If branch becomes an initializer of the main graph (the legacy
  PyTorch exporter writes branch constants that way), so rules read its value as they read any
  constant (reduction axes, reshape targets) and shape inference of the branch sees it.
* An If whose condition is a constant (an initializer no run can override) always takes the same
  branch: the branch's nodes replace the If, so the gradient graph has no If to take.

Names moved into the main graph keep their names where these are unique in the model, and get
fresh ones otherwise. Imports onnx and numpy only.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import onnx
from onnx import helper, numpy_helper

from models.gradient_graph.subgraphs import node_subgraphs

__all__ = ["fold_constant_ifs", "hoist_branch_constants"]

ConstantReader = Callable[[onnx.NodeProto], "onnx.TensorProto | None"]


def _is_if(node: onnx.NodeProto) -> bool:
    return node.op_type == "If" and node.domain in ("", "ai.onnx")


def _defined(graph: onnx.GraphProto) -> Iterable[str]:
    """Every name a graph and its nested subgraphs define."""
    yield from (v.name for v in graph.input)
    yield from (t.name for t in graph.initializer)
    for node in graph.node:
        yield from (out for out in node.output if out)
        for sub in node_subgraphs(node):
            yield from _defined(sub)


def hoist_branch_constants(graph: onnx.GraphProto, read_constant: ConstantReader) -> None:
    """Move ``Constant`` nodes of If branches (nested ones too) to ``graph``'s initializers.

    ``read_constant`` turns a Constant node into its tensor (``None`` when it cannot).
    Only constants whose name is defined once in the whole model move.
    """
    counts: dict[str, int] = {}
    for name in _defined(graph):
        counts[name] = counts.get(name, 0) + 1

    def visit(branch: onnx.GraphProto) -> None:
        kept: list[onnx.NodeProto] = []
        for node in branch.node:
            if (
                node.op_type == "Constant"
                and node.domain in ("", "ai.onnx")
                and counts.get(node.output[0]) == 1
            ):
                tensor = read_constant(node)
                if tensor is not None:
                    tensor.name = node.output[0]
                    graph.initializer.append(tensor)
                    continue
            if _is_if(node):
                for sub in node_subgraphs(node):
                    visit(sub)
            kept.append(node)
        if len(kept) != len(branch.node):
            del branch.node[:]
            branch.node.extend(kept)

    for node in graph.node:
        if _is_if(node):
            for sub in node_subgraphs(node):
                visit(sub)


def _condition(graph: onnx.GraphProto, name: str) -> bool | None:
    """The value of a constant If condition, ``None`` when it is not one."""
    if name in {v.name for v in graph.input}:
        return None  # an overridable default
    for tensor in graph.initializer:
        if tensor.name == name:
            if tensor.data_location == onnx.TensorProto.EXTERNAL:
                return None
            value = numpy_helper.to_array(tensor)
            return bool(value.reshape(-1)[0]) if value.size == 1 else None
    return None


def _rename(graph: onnx.GraphProto, mapping: dict[str, str]) -> None:
    """Rename reads (nested subgraphs included) and outputs of ``graph``'s nodes and its outputs."""
    for node in graph.node:
        for i, name in enumerate(node.input):
            node.input[i] = mapping.get(name, name)
        for i, name in enumerate(node.output):
            node.output[i] = mapping.get(name, name)
        for sub in node_subgraphs(node):
            _rename(sub, mapping)
    for value in graph.output:
        value.name = mapping.get(value.name, value.name)


def _inline(
    node: onnx.NodeProto, branch: onnx.GraphProto, taken: set[str]
) -> tuple[list[onnx.NodeProto], list[onnx.TensorProto]]:
    """The nodes and initializers replacing If ``node`` by its ``branch``."""
    local = {out for inner in branch.node for out in inner.output if out} | {
        t.name for t in branch.initializer
    }
    mapping: dict[str, str] = {}
    for name in sorted(local & taken):
        counter = 0
        fresh = f"{name}__inlined"
        while fresh in taken or fresh in local:
            counter += 1
            fresh = f"{name}__inlined{counter}"
        mapping[name] = fresh
        taken.add(fresh)
    taken.update(local)
    _rename(branch, mapping)
    initializers = []
    for tensor in branch.initializer:
        copy = onnx.TensorProto()
        copy.CopyFrom(tensor)
        copy.name = mapping.get(tensor.name, tensor.name)
        initializers.append(copy)
    nodes = []
    for inner in branch.node:  # copies: the If (and its branches) leaves the graph
        copy_node = onnx.NodeProto()
        copy_node.CopyFrom(inner)
        nodes.append(copy_node)
    prefix = node.name or (node.output[0] if node.output else "If")
    for out, value in zip(node.output, branch.output, strict=False):
        if out:
            nodes.append(
                helper.make_node("Identity", [value.name], [out], name=f"{prefix}/inlined_output_{out}")
            )
    return nodes, initializers


def fold_constant_ifs(graph: onnx.GraphProto) -> bool:
    """Replace each top-level If whose condition is constant by its taken branch; True if any was."""
    nodes = list(graph.node)
    decided = [_condition(graph, node.input[0]) if _is_if(node) else None for node in nodes]
    if all(value is None for value in decided):
        return False
    # Names an inlined branch must not reuse: all but those inside the Ifs being folded.
    taken = {v.name for v in graph.input} | {t.name for t in graph.initializer}
    for node, value in zip(nodes, decided, strict=True):
        taken.update(out for out in node.output if out)
        if value is None:
            for sub in node_subgraphs(node):
                taken.update(_defined(sub))
    kept: list[onnx.NodeProto] = []
    for node, value in zip(nodes, decided, strict=True):
        if value is None:
            kept.append(node)
            continue
        attr = "then_branch" if value else "else_branch"
        branch = next(a.g for a in node.attribute if a.name == attr)
        inlined, initializers = _inline(node, branch, taken)
        kept.extend(inlined)
        graph.initializer.extend(initializers)
    del graph.node[:]
    graph.node.extend(kept)
    return True
