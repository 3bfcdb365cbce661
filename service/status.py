"""The one table from exceptions to gRPC status codes, used at the gRPC boundary only.

A caller-fixable problem is INVALID_ARGUMENT, an unknown model NOT_FOUND, a model that failed to
load FAILED_PRECONDITION (retrying will not help until the repository is fixed and reloaded), a
request over a per-request limit or a busy server RESOURCE_EXHAUSTED, a draining server
UNAVAILABLE. Anything not in the table is a bug: INTERNAL, with only the request id sent to the
client and the traceback kept in the log.
"""

from __future__ import annotations

import grpc

from estimator.errors import (
    InvalidArgumentError,
    LimitExceededError,
    ModelEvaluationError,
    NonFiniteNoisyGradientsError,
)
from models.gradient_graph import GradientGraphError
from service.echo import bounded
from service.errors import (
    InvalidRequestError,
    ModelNotReadyError,
    OverloadedError,
    RequestCancelledError,
    RequestLimitError,
    ShuttingDownError,
    UnauthenticatedError,
    UnknownModelError,
)

__all__ = ["STATUS_TABLE", "status_for"]

# First match wins: list subclasses before their bases.
STATUS_TABLE: tuple[tuple[type[BaseException], grpc.StatusCode], ...] = (
    (UnknownModelError, grpc.StatusCode.NOT_FOUND),
    (ModelNotReadyError, grpc.StatusCode.FAILED_PRECONDITION),
    (InvalidRequestError, grpc.StatusCode.INVALID_ARGUMENT),
    (RequestLimitError, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (OverloadedError, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (ShuttingDownError, grpc.StatusCode.UNAVAILABLE),
    (UnauthenticatedError, grpc.StatusCode.UNAUTHENTICATED),
    (InvalidArgumentError, grpc.StatusCode.INVALID_ARGUMENT),
    # The request's noise drove a working model to overflow: fixed by asking for other noise.
    (NonFiniteNoisyGradientsError, grpc.StatusCode.INVALID_ARGUMENT),
    (LimitExceededError, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (GradientGraphError, grpc.StatusCode.FAILED_PRECONDITION),
)

# Errors whose messages may quote runtime internals (ONNX Runtime messages, file paths): the
# client gets the status and the request id, the message goes to the log only.
_HIDDEN: tuple[tuple[type[BaseException], grpc.StatusCode, str], ...] = (
    (ModelEvaluationError, grpc.StatusCode.INTERNAL, "the model failed while computing gradients"),
)


def status_for(error: BaseException, request_id: str) -> tuple[grpc.StatusCode, str, bool]:
    """The status code and client-facing message of ``error``, and whether it is a bug to log with its traceback.

    Anything not in the tables is INTERNAL with only ``request_id`` in the message. Messages are
    :func:`~service.echo.bounded`: a request value quoted in them whole (a megabyte model name)
    comes back cut, so the status always fits gRPC's metadata limit.
    """
    if isinstance(error, RequestCancelledError):
        code = grpc.StatusCode.DEADLINE_EXCEEDED if error.deadline_exceeded else grpc.StatusCode.CANCELLED
        return code, bounded(str(error)), False
    for error_type, code in STATUS_TABLE:
        if isinstance(error, error_type):
            return code, bounded(str(error)), False
    for error_type, code, summary in _HIDDEN:
        if isinstance(error, error_type):
            return code, f"{summary}; see the server log for request id {request_id}", False
    return grpc.StatusCode.INTERNAL, f"internal error; see the server log for request id {request_id}", True
