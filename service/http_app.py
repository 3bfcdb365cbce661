"""The HTTP front end: a Starlette app over :class:`service.core.MollifyCore`, translating HTTP
requests into core calls and a :class:`service.status.Failure` into an HTTP status; nothing else.

Routes (KServe v1 and the Open Inference Protocol, as KServe's model servers speak them):

    POST /v1/models/{name}:explain      {"instances": [...], "parameters": {...}} -> {"explanations": [...]}
    GET  /v1/models                     {"models": [names]}
    GET  /v1/models/{name}              {"name", "ready"}
    GET  /v2                            server metadata
    GET  /v2/health/live                200 while the process serves
    GET  /v2/health/ready               200 when ready, 503 while no model is ready or while draining
    GET  /v2/models/{name}              OIP model metadata (and what Mollify knows of the model)
    GET  /v2/models/{name}/ready        200 when the model is ready, 503 when not, 404 when unknown
    POST /v2/models/{name}/explain      OIP "inputs" -> OIP "outputs" (attribution, standard_error, ...)
    GET  /metrics                       Prometheus metrics

Request bodies: ``service/http_codec.py``. Errors: ``{"error": message, "code": gRPC code name,
"request_id": id}`` with the HTTP status of ``service/status.py``'s table. Every response carries
``x-request-id`` (the caller's when well formed). With a token, every route but health, readiness
and metrics needs ``Authorization: Bearer <token>`` (health too with ``auth_health``). Bodies over
``max_message_bytes`` are refused like an oversized gRPC message.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable
from importlib import metadata
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from service import http_codec
from service.auth import UNAUTHENTICATED_MESSAGE
from service.core import Call, MollifyCore, request_id_from
from service.errors import InvalidRequestError, RequestLimitError, UnauthenticatedError, UnknownModelError
from service.explainer import ExplainQuery
from service.queries import query_summary
from service.scheduler import Cancellation
from service.status import failure_for
from service.vocabulary import InstanceExplanation, ModelInfo, TensorDescription

__all__ = ["create_app"]

_JSON = "application/json"
try:
    _VERSION = metadata.version("mollify")
except metadata.PackageNotFoundError:  # run from a source tree that was never installed
    _VERSION = "unknown"
Handler = Callable[[Request], Awaitable[Response]]


def create_app(core: MollifyCore) -> Starlette:
    """The ASGI app of ``core``'s HTTP front end."""
    routes = _Routes(core)
    return Starlette(
        routes=[
            Route("/v1/models", routes.v1_models, methods=["GET"]),
            Route("/v1/models/{name}:explain", routes.v1_explain, methods=["POST"]),
            Route("/v1/models/{name}", routes.v1_model, methods=["GET"]),
            Route("/v2", routes.server_metadata, methods=["GET"]),
            Route("/v2/health/live", routes.live, methods=["GET"]),
            Route("/v2/health/ready", routes.ready, methods=["GET"]),
            Route("/v2/models/{name}", routes.v2_model, methods=["GET"]),
            Route("/v2/models/{name}/ready", routes.v2_model_ready, methods=["GET"]),
            Route("/v2/models/{name}/explain", routes.v2_explain, methods=["POST"]),
            Route("/metrics", routes.metrics, methods=["GET"]),
        ]
    )


def _json(document: Any, request_id: str, status: int = 200) -> Response:
    return Response(
        http_codec.to_json(document),
        status_code=status,
        media_type=_JSON,
        headers={"x-request-id": request_id},
    )


class _Routes:
    def __init__(self, core: MollifyCore) -> None:
        self._core = core
        self._max_body = core.settings.max_message_bytes
        self._auth_health = core.settings.auth_health

    # ------------------------------------------------------------------------ explain

    async def v1_explain(self, request: Request) -> Response:
        return await self._explain(
            request,
            "http.v1.explain",
            http_codec.v1_query,
            lambda query, info, results, rid: http_codec.v1_response(query.model, results, rid),
        )

    async def v2_explain(self, request: Request) -> Response:
        return await self._explain(
            request,
            "http.v2.explain",
            http_codec.oip_query,
            lambda query, info, results, rid: http_codec.oip_response(
                query.model, info.version, results, rid
            ),
        )

    async def _explain(
        self,
        request: Request,
        method: str,
        decode: Callable[[str, Any, tuple[TensorDescription, ...]], ExplainQuery],
        encode: Callable[[ExplainQuery, ModelInfo, list[InstanceExplanation], str], dict[str, Any]],
    ) -> Response:
        call = self._core.call(method, request.headers.get("x-request-id"))
        try:
            self._authorize(request)
            body = await self._body(request)
            disconnected = threading.Event()
            watcher = asyncio.create_task(_watch_disconnect(request, disconnected))
            cancellation = Cancellation(lambda: not disconnected.is_set(), None, self._core.cut_off)
            name = request.path_params["name"]

            def work() -> bytes:
                query = decode(name, http_codec.parse_body(body), self._request_inputs(name))
                call.fields.update(query_summary(query))
                results = self._core.explain(query, cancellation)
                return http_codec.to_json(encode(query, self._core.model(query.model), results, call.id))

            try:
                payload = await run_in_threadpool(work)
            finally:
                cancellation.cancel()
                watcher.cancel()
        except Exception as err:  # noqa: BLE001 - the boundary maps every error to a status
            return self._failed(call, err)
        call.succeeded()
        return Response(payload, media_type=_JSON, headers={"x-request-id": call.id})

    def _request_inputs(self, name: str) -> tuple[TensorDescription, ...]:
        """The inputs a request to model ``name`` sends (dtypes decide how JSON numbers are read);
        empty for an unknown model, which the explanation then reports."""
        try:
            return self._core.model(name).request_inputs
        except (UnknownModelError, InvalidRequestError):
            return ()

    # ------------------------------------------------------------------------- models

    async def v1_models(self, request: Request) -> Response:
        return await self._answer(
            request, "http.v1.list_models", lambda: {"models": [m.name for m in self._core.list_models()]}
        )

    async def v1_model(self, request: Request) -> Response:
        name = request.path_params["name"]
        return await self._answer(request, "http.v1.model", lambda: _v1_status(self._core.model(name)))

    async def v2_model(self, request: Request) -> Response:
        name = request.path_params["name"]
        return await self._answer(
            request, "http.v2.model_metadata", lambda: http_codec.model_metadata(self._core.model(name))
        )

    async def server_metadata(self, request: Request) -> Response:
        return await self._answer(
            request,
            "http.v2.server_metadata",
            lambda: {"name": "mollify", "version": _VERSION, "extensions": ["explain"]},
        )

    async def _answer(self, request: Request, method: str, answer: Callable[[], dict[str, Any]]) -> Response:
        call = self._core.call(method, request.headers.get("x-request-id"))
        try:
            self._authorize(request)
            document = answer()
        except Exception as err:  # noqa: BLE001 - the boundary maps every error to a status
            return self._failed(call, err)
        call.succeeded()
        return _json(document, call.id)

    # ------------------------------------------------------------------------- health

    async def live(self, request: Request) -> Response:
        return self._probe(request, lambda: ({"live": self._core.live}, self._core.live))

    async def ready(self, request: Request) -> Response:
        return self._probe(request, lambda: ({"ready": (ready := self._core.health().ready)}, ready))

    async def v2_model_ready(self, request: Request) -> Response:
        name = request.path_params["name"]

        def answer() -> tuple[dict[str, Any], bool]:
            ready = self._core.model_ready(name)
            return {"name": name, "ready": ready}, ready

        return self._probe(request, answer)

    def _probe(self, request: Request, answer: Callable[[], tuple[dict[str, Any], bool]]) -> Response:
        """A health answer: 200 when true, 503 when false; not logged (probes come every few seconds)."""
        request_id = request_id_from(request.headers.get("x-request-id"))
        try:
            if self._auth_health:
                self._authorize(request)
            document, ok = answer()
        except Exception as err:  # noqa: BLE001 - the boundary maps every error to a status
            failure = failure_for(err, request_id)
            return _json(
                {"error": failure.message, "code": failure.code.name, "request_id": request_id},
                request_id,
                failure.http_status,
            )
        return _json(document, request_id, 200 if ok else 503)

    async def metrics(self, request: Request) -> Response:
        return Response(self._core.metrics.exposition(), media_type=CONTENT_TYPE_LATEST)

    # ------------------------------------------------------------------------ helpers

    def _authorize(self, request: Request) -> None:
        if not self._core.authorized(request.headers.get("authorization")):
            raise UnauthenticatedError(UNAUTHENTICATED_MESSAGE.replace("metadata", "header"))

    async def _body(self, request: Request) -> bytes:
        """The request body, refused past ``max_message_bytes`` before it is all read."""
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > self._max_body:
            raise _too_large(int(declared), self._max_body)
        chunks: list[bytes] = []
        size = 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > self._max_body:
                raise _too_large(size, self._max_body)
            chunks.append(chunk)
        return b"".join(chunks)

    @staticmethod
    def _failed(call: Call, error: BaseException) -> Response:
        failure = call.failed(error)
        response = _json(
            {"error": failure.message, "code": failure.code.name, "request_id": call.id},
            call.id,
            failure.http_status,
        )
        if isinstance(error, UnauthenticatedError):
            response.headers["www-authenticate"] = "Bearer"
        return response


def _too_large(size: int, limit: int) -> RequestLimitError:
    return RequestLimitError(
        f"the request body has {size} bytes or more, over the limit of {limit}; send fewer instances or "
        "raise --max-message-bytes / MOLLIFY_MAX_MESSAGE_BYTES"
    )


def _v1_status(info: ModelInfo) -> dict[str, Any]:
    return {"name": info.name, "ready": info.ready, "error": info.error}


async def _watch_disconnect(request: Request, disconnected: threading.Event) -> None:
    """Set ``disconnected`` when the client goes away (the body has been read already)."""
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            disconnected.set()
            return
