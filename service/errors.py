"""The service's exception tree. Transport-free: ``service/status.py`` maps each class to a gRPC
status code in one table at the boundary.

Every message names the field or setting at fault, what was expected and what was received.
"""

from __future__ import annotations


class ServiceError(Exception):
    """Base of every error the service raises on purpose."""


class InvalidRequestError(ServiceError, ValueError):
    """A request field is malformed or inconsistent with the model; the caller can fix it."""


class UnknownModelError(ServiceError, LookupError):
    """No model of that name is in the repository."""


class ModelNotReadyError(ServiceError):
    """The model exists but failed to load; the message carries its load error."""


class RequestLimitError(ServiceError):
    """The request asks for more than a configured per-request limit; the message names the setting."""


class OverloadedError(ServiceError):
    """Every computing slot and queue place is taken; retry later."""


class ShuttingDownError(ServiceError):
    """The server is draining before it exits; retry against another replica or later."""


class RequestCancelledError(ServiceError):
    """The client cancelled the request (or its deadline passed) while it waited or computed."""

    def __init__(self, message: str, *, deadline_exceeded: bool) -> None:
        super().__init__(message)
        self.deadline_exceeded = deadline_exceeded


class UnauthenticatedError(ServiceError):
    """The request lacks the bearer token the server was configured with, or carries a wrong one."""


class SettingsError(ServiceError, ValueError):
    """A flag or ``MOLLIFY_*`` environment variable holds an invalid value."""
