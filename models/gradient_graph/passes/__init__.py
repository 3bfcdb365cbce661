"""Graph passes the builder runs before the reverse walk, behind one registry.

Importing this package registers the built-in passes, in this order: the pooled ReLU mask
(:mod:`.pooled_relu`). See :mod:`models.gradient_graph.passes.registry` for what a pass is and
how to add one.
"""

from __future__ import annotations

from models.gradient_graph.passes import pooled_relu  # noqa: F401 - imported for its registration
from models.gradient_graph.passes.registry import (
    ActiveGraph,
    GraphPass,
    RuleRewrite,
    register_pass,
    registered_passes,
    rule_overrides,
    unregister_pass,
)

__all__ = [
    "ActiveGraph",
    "GraphPass",
    "RuleRewrite",
    "register_pass",
    "registered_passes",
    "rule_overrides",
    "unregister_pass",
]
