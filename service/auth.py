"""Bearer-token authentication as a gRPC server interceptor.

When the server has a token, every call must carry ``authorization: Bearer <token>`` metadata, or
it ends with UNAUTHENTICATED before reaching any servicer. Health checks
(``grpc.health.v1.Health``) are exempt unless ``auth_health`` is set, so load balancers and
orchestrators can probe without the secret; reflection is not exempt. Tokens are compared in
constant time.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable
from typing import Any

import grpc

__all__ = ["HEALTH_PREFIX", "UNAUTHENTICATED_MESSAGE", "BearerTokenInterceptor", "bearer_token_matches"]

HEALTH_PREFIX = "/grpc.health.v1.Health/"


def bearer_token_matches(token: bytes, authorization: str) -> bool:
    """Whether an ``authorization`` value (header or metadata) is ``Bearer <token>``, compared in
    constant time; the scheme is case-insensitive. Shared by the gRPC and HTTP front ends."""
    scheme, _, credential = str(authorization).partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(credential.strip().encode(), token)


class BearerTokenInterceptor(grpc.ServerInterceptor):  # type: ignore[misc]  # grpcio ships no type stubs: its base is Any
    """Rejects calls without the right bearer token.

    Args:
        token: the expected token.
        exempt_prefixes: method paths starting with one of these need no token.
        on_reject: called with the method path of every rejected call (metrics).
    """

    def __init__(
        self,
        token: str,
        *,
        exempt_prefixes: tuple[str, ...] = (HEALTH_PREFIX,),
        on_reject: Callable[[str], None] | None = None,
    ) -> None:
        self._token = token.encode()
        self._exempt = exempt_prefixes
        self._on_reject = on_reject

    def _authorized(self, metadata: Any) -> bool:
        for key, value in metadata or ():
            if key.lower() == "authorization" and bearer_token_matches(self._token, value):
                return True
        return False

    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], grpc.RpcMethodHandler | None],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler | None:
        method = str(handler_call_details.method)
        handler = continuation(handler_call_details)
        if handler is None or method.startswith(self._exempt):
            return handler
        if self._authorized(handler_call_details.invocation_metadata):
            return handler
        if self._on_reject is not None:
            self._on_reject(method)
        return _rejecting(handler)


UNAUTHENTICATED_MESSAGE = "this server needs 'authorization: Bearer <token>' metadata with the right token"
_MESSAGE = UNAUTHENTICATED_MESSAGE


def _rejecting(handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
    """A handler of the same kind as ``handler`` that only aborts with UNAUTHENTICATED."""

    def abort(request: Any, context: grpc.ServicerContext) -> Any:
        context.abort(grpc.StatusCode.UNAUTHENTICATED, _MESSAGE)

    codec = {
        "request_deserializer": handler.request_deserializer,
        "response_serializer": handler.response_serializer,
    }
    if handler.request_streaming and handler.response_streaming:
        return grpc.stream_stream_rpc_method_handler(abort, **codec)
    if handler.request_streaming:
        return grpc.stream_unary_rpc_method_handler(abort, **codec)
    if handler.response_streaming:
        return grpc.unary_stream_rpc_method_handler(abort, **codec)
    return grpc.unary_unary_rpc_method_handler(abort, **codec)
