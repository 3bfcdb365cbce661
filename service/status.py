"""The one table from exceptions to statuses: the gRPC status code and the HTTP status side by side,
used by both front ends (``service/servicer.py`` and ``service/http_app.py``) through
:func:`failure_for`.

A caller-fixable problem is INVALID_ARGUMENT / 400, an unknown model NOT_FOUND / 404, a model that
failed to load FAILED_PRECONDITION / 503 (retrying will not help until the repository is fixed and
reloaded), a request over a per-request limit RESOURCE_EXHAUSTED / 413, a busy server
RESOURCE_EXHAUSTED / 429, a draining server UNAVAILABLE / 503, a missing or wrong token
UNAUTHENTICATED / 401. Anything not in the table is a bug: INTERNAL / 500, with only the request id
sent to the client and the traceback kept in the log.
"""

from __future__ import annotations

from dataclasses import dataclass

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

__all__ = ["CANCELLED_HTTP_STATUS", "STATUS_TABLE", "Failure", "failure_for", "status_for"]

CANCELLED_HTTP_STATUS = 499
"""The client closed the request (nginx's convention; no standard code exists)."""

# First match wins: list subclasses before their bases. (error, gRPC status code, HTTP status)
STATUS_TABLE: tuple[tuple[type[BaseException], grpc.StatusCode, int], ...] = (
    (UnknownModelError, grpc.StatusCode.NOT_FOUND, 404),
    (ModelNotReadyError, grpc.StatusCode.FAILED_PRECONDITION, 503),
    (InvalidRequestError, grpc.StatusCode.INVALID_ARGUMENT, 400),
    (RequestLimitError, grpc.StatusCode.RESOURCE_EXHAUSTED, 413),
    (OverloadedError, grpc.StatusCode.RESOURCE_EXHAUSTED, 429),
    (ShuttingDownError, grpc.StatusCode.UNAVAILABLE, 503),
    (UnauthenticatedError, grpc.StatusCode.UNAUTHENTICATED, 401),
    (InvalidArgumentError, grpc.StatusCode.INVALID_ARGUMENT, 400),
    # The request's noise drove a working model to overflow: fixed by asking for other noise.
    (NonFiniteNoisyGradientsError, grpc.StatusCode.INVALID_ARGUMENT, 400),
    (LimitExceededError, grpc.StatusCode.RESOURCE_EXHAUSTED, 413),
    (GradientGraphError, grpc.StatusCode.FAILED_PRECONDITION, 503),
)

# The HTTP status of each gRPC code outside the table (cancellation, deadlines, bugs).
_HTTP_OF_CODE: dict[grpc.StatusCode, int] = {
    grpc.StatusCode.CANCELLED: CANCELLED_HTTP_STATUS,
    grpc.StatusCode.DEADLINE_EXCEEDED: 504,
    grpc.StatusCode.INTERNAL: 500,
}


@dataclass(frozen=True)
class Failure:
    """How a failed call is answered, whichever front end carries it.

    Attributes:
        code: the gRPC status code (its name is also the ``code`` label of the metrics).
        http_status: the HTTP status.
        message: the client-facing message (bounded; never internals for INTERNAL).
        unexpected: whether it is a bug, to be logged with its traceback.
    """

    code: grpc.StatusCode
    http_status: int
    message: str
    unexpected: bool


# Errors whose messages may quote runtime internals (ONNX Runtime messages, file paths): the
# client gets the status and the request id, the message goes to the log only.
_HIDDEN: tuple[tuple[type[BaseException], grpc.StatusCode, str], ...] = (
    (ModelEvaluationError, grpc.StatusCode.INTERNAL, "the model failed while computing gradients"),
)


def failure_for(error: BaseException, request_id: str) -> Failure:
    """The gRPC code, HTTP status and client-facing message of ``error`` (see :func:`status_for`)."""
    if isinstance(error, RequestCancelledError):
        code = grpc.StatusCode.DEADLINE_EXCEEDED if error.deadline_exceeded else grpc.StatusCode.CANCELLED
        return Failure(code, _HTTP_OF_CODE[code], bounded(str(error)), False)
    for error_type, code, http_status in STATUS_TABLE:
        if isinstance(error, error_type):
            return Failure(code, http_status, bounded(str(error)), False)
    for error_type, code, summary in _HIDDEN:
        if isinstance(error, error_type):
            return Failure(code, 500, f"{summary}; see the server log for request id {request_id}", False)
    return Failure(
        grpc.StatusCode.INTERNAL, 500, f"internal error; see the server log for request id {request_id}", True
    )


def status_for(error: BaseException, request_id: str) -> tuple[grpc.StatusCode, str, bool]:
    """The status code and client-facing message of ``error``, and whether it is a bug to log with its traceback.

    Anything not in the tables is INTERNAL with only ``request_id`` in the message. Messages are
    :func:`~service.echo.bounded`: a request value quoted in them whole (a megabyte model name)
    comes back cut, so the status always fits gRPC's metadata limit.
    """
    failure = failure_for(error, request_id)
    return failure.code, failure.message, failure.unexpected
