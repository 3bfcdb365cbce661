"""Names the builder gives to the tensors it adds to a model."""

from __future__ import annotations

__all__ = ["BATCH_DIM", "METADATA_KEY", "cotangent_name", "gradient_name"]

#: Symbolic name of the leading (batch) dimension of the inputs, cotangent and gradients.
BATCH_DIM = "batch"

#: ``metadata_props`` key holding the JSON :class:`~models.gradient_graph.GradientMetadata`.
METADATA_KEY = "mollify.gradient_graph"

_COTANGENT_PREFIX = "mollify_cotangent__"
_GRADIENT_PREFIX = "mollify_gradient__"


def cotangent_name(explained: str) -> str:
    """Name of the graph input holding the cotangent of ``explained`` (e.g. ``mollify_cotangent__logits``)."""
    return _COTANGENT_PREFIX + explained


def gradient_name(input_name: str) -> str:
    """Name of the graph output holding ``J^T · cotangent`` for ``input_name`` (e.g. ``mollify_gradient__image``)."""
    return _GRADIENT_PREFIX + input_name
