"""The registry of graph passes: rewrites of how the builder differentiates chosen nodes.

Each node's gradient comes from its op's VJP rule (:mod:`models.gradient_graph.rules`). A pass
looks at the part of the forward graph being differentiated (an :class:`ActiveGraph`) before the
reverse walk and may replace the rule of some nodes, e.g. to move a mask from one node's gradient
to another's where the result is the same and cheaper. The builder runs every registered pass, in
registration order, over the main graph (If branches are differentiated with the plain rules),
without knowing what any of them does.

A pass has a ``name`` (unique in the registry), a docstring saying what it rewrites and why the
gradient stays the same (or what it computes instead), and ``apply(graph)``, which returns
``(node, rewrite)`` pairs: ``rewrite`` maps the node's current rule (the registered one, or what
an earlier pass made of it) to its new rule, so passes compose. A pass never edits the forward
graph; the new rule must keep the rule contract of :mod:`models.gradient_graph.rules.registry`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

import onnx

from models.gradient_graph.rules.registry import VjpRule, get_rule
from models.gradient_graph.subgraphs import differentiable_reads

__all__ = [
    "ActiveGraph",
    "GraphPass",
    "RuleRewrite",
    "register_pass",
    "registered_passes",
    "rule_overrides",
    "unregister_pass",
]

#: Maps a node's current VJP rule to the rule it is differentiated with instead.
RuleRewrite = Callable[[VjpRule], VjpRule]


@dataclass(frozen=True)
class ActiveGraph:
    """The part of a forward graph the builder differentiates.

    Attributes:
        graph: the whole forward graph (read it, never change it).
        nodes: the nodes on the path from the differentiated inputs to the explained tensor, in
            graph (topological) order.
        tensors: the float tensors on that path; a gradient flows only through them.
        explained: the explained tensor, whose cotangent seeds the reverse walk.
    """

    graph: onnx.GraphProto
    nodes: Sequence[onnx.NodeProto]
    tensors: frozenset[str]
    explained: str

    def consumers(self) -> dict[str, list[onnx.NodeProto]]:
        """The active nodes reading each active tensor (subgraph reads included), in graph order."""
        readers: dict[str, list[onnx.NodeProto]] = {}
        for node in self.nodes:
            for name in differentiable_reads(node):
                if name and name in self.tensors:
                    readers.setdefault(name, []).append(node)
        return readers

    def graph_outputs(self) -> frozenset[str]:
        """The names of the graph's outputs."""
        return frozenset(value.name for value in self.graph.output)


class GraphPass(Protocol):
    """A registered rewrite of the rules some active nodes are differentiated with."""

    name: str

    def apply(self, graph: ActiveGraph) -> Iterable[tuple[onnx.NodeProto, RuleRewrite]]:
        """The ``(node, rewrite)`` pairs for the nodes of ``graph.nodes`` this pass rewrites."""
        ...


_PASSES: dict[str, GraphPass] = {}


def register_pass(graph_pass: GraphPass) -> GraphPass:
    """Add ``graph_pass`` after the passes registered so far; it runs on every later build.

    Raises:
        ValueError: a pass of the same name is registered already.
    """
    if graph_pass.name in _PASSES:
        raise ValueError(f"a graph pass named {graph_pass.name!r} is registered already; unregister it first")
    _PASSES[graph_pass.name] = graph_pass
    return graph_pass


def unregister_pass(name: str) -> GraphPass:
    """Remove the pass called ``name`` and return it (later builds no longer run it).

    Raises:
        ValueError: no pass of that name is registered (the message lists the registered ones).
    """
    if name not in _PASSES:
        known = ", ".join(repr(n) for n in _PASSES) or "none"
        raise ValueError(f"no graph pass named {name!r} is registered; registered: {known}")
    return _PASSES.pop(name)


def registered_passes() -> list[GraphPass]:
    """The registered passes, in the order the builder runs them."""
    return list(_PASSES.values())


def rule_overrides(graph: ActiveGraph) -> Mapping[int, VjpRule]:
    """Run the registered passes over ``graph``: the rule each rewritten node (by ``id``) is
    differentiated with instead of its op's registered rule."""
    overrides: dict[int, VjpRule] = {}
    for graph_pass in _PASSES.values():
        for node, rewrite in graph_pass.apply(graph):
            current = overrides.get(id(node)) or get_rule(node.op_type, node.domain)
            if current is None:
                raise RuntimeError(
                    f"graph pass {graph_pass.name!r} rewrote a node without a rule ({node.op_type})"
                )
            overrides[id(node)] = rewrite(current)
    return overrides
