"""Explanation requests into the domain's :class:`~service.explainer.ExplainQuery`, for every front
end: the gRPC servicer decodes an ``ExplainRequest`` message with :func:`query_from_proto`; the HTTP
front end builds the same message from its JSON (``service/http_codec.py``) and decodes it here,
so both read the same fields with the same checks and messages.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from protos.mollify.v1 import explainer_pb2 as pb
from service import codec
from service.echo import ECHO_LIMIT, echo
from service.explainer import ExplainQuery
from service.repository import validate_model_name

__all__ = ["query_from_proto", "query_summary"]


def query_from_proto(request: pb.ExplainRequest, *, inputs: np.ndarray | None = None) -> ExplainQuery:
    """Decode ``request``; raises ``InvalidRequestError`` naming the field at fault.

    Args:
        request: the message.
        inputs: the inputs when they came another way (an HTTP body's numbers: floats cast to
            float32, integers kept), instead of ``request.inputs``.
    """
    model = validate_model_name(request.model_name)
    if inputs is not None and inputs.dtype.kind not in "iub":
        inputs = inputs.astype(np.float32, copy=False)
    return ExplainQuery(
        model=model,
        inputs=codec.tensor_to_any_array(request.inputs, "inputs") if inputs is None else inputs,
        target=codec.target_from_proto(request.target),
        method=codec.method_from_proto(request.method),
        seed=int(request.seed) if request.HasField("seed") else None,
        lower=codec.tensor_to_array(request.lower, "lower") if request.HasField("lower") else None,
        upper=codec.tensor_to_array(request.upper, "upper") if request.HasField("upper") else None,
        extra_inputs={
            name: codec.tensor_to_any_array(tensor, f"extra_inputs[{name!r}]")
            for name, tensor in request.extra_inputs.items()
        },
        explained_input=request.explained_input,
    )


def query_summary(query: ExplainQuery) -> dict[str, Any]:
    """What the log line of a request says about it (before the inputs are validated)."""
    model = query.model if len(query.model) <= ECHO_LIMIT else echo(query.model)
    return {"model": model, "instances": int(query.inputs.shape[0]) if query.inputs.ndim else 0}
