"""Subgraphs of control-flow nodes (If branches, Loop and Scan bodies) and what they read from outside.

A subgraph may read any tensor of its enclosing scopes by name. For differentiation those reads
are inputs of the node like its explicit ones: :func:`differentiable_reads` lists them after the
explicit inputs, in the order the builder and the ``If`` rule agree on. Imports onnx only.
"""

from __future__ import annotations

import onnx

__all__ = ["differentiable_reads", "graph_outer_reads", "node_subgraphs", "outer_reads"]


def node_subgraphs(node: onnx.NodeProto) -> list[onnx.GraphProto]:
    """The graphs held in ``node``'s attributes (none for an op without subgraphs)."""
    graphs: list[onnx.GraphProto] = []
    for attribute in node.attribute:
        graphs.extend(attribute.graphs)
        if attribute.HasField("g"):
            graphs.append(attribute.g)
    return graphs


def graph_outer_reads(graph: onnx.GraphProto) -> set[str]:
    """Tensors of enclosing scopes that ``graph`` (or a subgraph nested in it) reads."""
    reads: set[str] = set()
    local = {v.name for v in graph.input} | {t.name for t in graph.initializer}
    for inner in graph.node:
        reads.update(name for name in [*inner.input, *outer_reads(inner)] if name and name not in local)
        local.update(out for out in inner.output if out)
    reads.update(v.name for v in graph.output if v.name not in local)
    return reads


def outer_reads(node: onnx.NodeProto) -> set[str]:
    """Tensors of the enclosing graph that ``node``'s subgraphs read."""
    reads: set[str] = set()
    for graph in node_subgraphs(node):
        reads |= graph_outer_reads(graph)
    return reads


def differentiable_reads(node: onnx.NodeProto) -> list[str]:
    """The node's inputs (positions kept, ``""`` for omitted ones), then its subgraphs' outer reads, sorted."""
    if not node_subgraphs(node):
        return list(node.input)
    return [*node.input, *sorted(outer_reads(node) - set(node.input))]
