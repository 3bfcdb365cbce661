"""Vector-Jacobian rules, one small module per op family, behind one registry.

Importing this package registers every rule; :func:`supported_ops` lists them. Families:
elementwise arithmetic and math functions (:mod:`.elementwise`), activations and (log-)softmax
(:mod:`.activations`), MatMul/Gemm (:mod:`.matmul`), Einsum (:mod:`.einsum`), Conv/ConvTranspose
(:mod:`.conv`), pooling (:mod:`.pooling`), normalisation (:mod:`.normalization`), reductions
(:mod:`.reduction`), data movement (:mod:`.shape`), Resize (:mod:`.resize`), the recurrent
LSTM/GRU/RNN (:mod:`.recurrent`) and If (:mod:`.control_flow`). See
:mod:`models.gradient_graph.rules.registry` for the rule signature.
"""

from __future__ import annotations

from models.gradient_graph.rules import (  # noqa: F401 - imported for their registrations
    activations,
    control_flow,
    conv,
    einsum,
    elementwise,
    matmul,
    normalization,
    pooling,
    recurrent,
    reduction,
    resize,
    shape,
)
from models.gradient_graph.rules.registry import VjpRule, get_rule, register, supported_ops

__all__ = ["VjpRule", "get_rule", "register", "supported_ops"]
