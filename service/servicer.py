"""The ``mollify.v1.ExplainerService`` servicer: decode → domain call → encode, nothing else.

Every RPC runs inside :class:`_Call`, over the core's :class:`service.core.Call`, which gives it a
request id (the client's ``x-request-id`` metadata when well formed, else a fresh one; echoed as
trailing metadata), maps exceptions to status codes through ``service/status.py``, logs one line
per call and records metrics.

:func:`add_servicer_to_server` registers it with request decoding that cannot fail inside gRPC:
bytes that do not parse as the request message reach the handler, which answers
INVALID_ARGUMENT with a request id and logs it like any other call.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, NoReturn

import grpc
from google.protobuf.message import DecodeError, Message

from protos.mollify.v1 import explainer_pb2 as pb
from protos.mollify.v1 import explainer_pb2_grpc as pb_grpc
from service import codec
from service.core import Call
from service.errors import InvalidRequestError
from service.explainer import Explainer, ExplainQuery
from service.metrics import Metrics
from service.queries import query_from_proto, query_summary
from service.repository import ModelRepository, validate_model_name
from service.scheduler import Cancellation
from service.vocabulary import ExplainProgress, InstanceExplanation

__all__ = ["ExplainerServicer", "add_servicer_to_server"]

# How often a streaming handler wakes to notice a client that went away.
_STREAM_POLL_S = 0.05


class _Call:
    """One RPC: the core's :class:`~service.core.Call` plus what only gRPC has (metadata, deadline,
    abort, the callback when the RPC ends)."""

    def __init__(
        self,
        method: str,
        context: grpc.ServicerContext,
        metrics: Metrics,
        cut_off: threading.Event | None = None,
    ) -> None:
        self.context = context
        self._cut_off = cut_off
        self.record = Call(method, metrics, dict(context.invocation_metadata() or ()).get("x-request-id"))
        self.id = self.record.id
        self.fields = self.record.fields
        context.set_trailing_metadata((("x-request-id", self.id),))

    def cancellation(self) -> Cancellation:
        remaining = self.context.time_remaining()
        deadline = time.monotonic() + remaining if remaining is not None else None
        cancellation = Cancellation(self.context.is_active, deadline, self._cut_off)
        # Runs when the RPC ends for any reason, so work still going on stops at the next chunk.
        self.context.add_callback(cancellation.cancel)
        return cancellation

    def succeeded(self) -> None:
        self.record.succeeded()

    def abandoned(self) -> None:
        self.record.abandoned()

    def failed(self, error: BaseException) -> NoReturn:
        failure = self.record.failed(error)
        self.context.abort(failure.code, failure.message)
        raise AssertionError("context.abort returned")  # abort always raises; keeps type checkers honest


class ExplainerServicer(pb_grpc.ExplainerServiceServicer):
    """Translates ``mollify.v1`` calls into :class:`Explainer` and :class:`ModelRepository` calls.

    Args:
        explainer, repository, metrics: the domain and its instruments.
        cut_off: set by the server when its shutdown grace period is over; explanations still
            running then end with UNAVAILABLE.
    """

    def __init__(
        self,
        explainer: Explainer,
        repository: ModelRepository,
        metrics: Metrics,
        cut_off: threading.Event | None = None,
    ) -> None:
        self._explainer = explainer
        self._repository = repository
        self._metrics = metrics
        self._cut_off = cut_off

    def _call(self, method: str, context: grpc.ServicerContext) -> _Call:
        return _Call(method, context, self._metrics, self._cut_off)

    def undecodable(self, method: str, request: _Undecodable, context: grpc.ServicerContext) -> NoReturn:
        """Answer a request whose bytes did not parse: INVALID_ARGUMENT, logged with its request id."""
        call = self._call(method, context)
        call.failed(
            InvalidRequestError(
                f"the request is not a valid {request.message_name} message ({request.error}); "
                "send the message defined in protos/mollify/v1/explainer.proto"
            )
        )

    # -------------------------------------------------------------------------- explain

    def Explain(self, request: pb.ExplainRequest, context: grpc.ServicerContext) -> pb.ExplainResponse:
        call = self._call("Explain", context)
        try:
            query = query_from_proto(request)
            call.fields.update(query_summary(query))
            results = self._explainer.explain(query, call.cancellation())
            response = _encode(query.model, results, call.id)
        except Exception as err:  # noqa: BLE001 - the boundary maps every error to a status
            call.failed(err)
        call.succeeded()
        return response

    def ExplainStream(
        self, request: pb.ExplainStreamRequest, context: grpc.ServicerContext
    ) -> Iterator[pb.ExplainStreamResponse]:
        call = self._call("ExplainStream", context)
        cancellation: Cancellation | None = None
        try:
            query = query_from_proto(request.request)
            call.fields.update(query_summary(query))
            cancellation = call.cancellation()
            for event in self._run_streaming(query, cancellation):
                if isinstance(event, ExplainProgress):
                    yield pb.ExplainStreamResponse(progress=codec.progress_to_proto(event))
                else:
                    yield pb.ExplainStreamResponse(result=_encode(query.model, event, call.id))
        except GeneratorExit:
            # The client went away mid-stream; gRPC closes the generator.
            call.abandoned()
            raise
        except Exception as err:  # noqa: BLE001 - the boundary maps every error to a status
            call.failed(err)
        finally:
            if cancellation is not None:
                cancellation.cancel()
        call.succeeded()

    def _run_streaming(
        self, query: ExplainQuery, cancellation: Cancellation
    ) -> Iterator[ExplainProgress | list[InstanceExplanation]]:
        """Run the explanation on a worker thread and yield its progress events as they come.

        The estimator reports progress through a callback, and a gRPC stream is a generator on the
        handler thread, so the work runs beside it and a queue carries the events across.
        """
        events: queue.Queue[tuple[str, Any]] = queue.Queue()

        def work() -> None:
            try:
                results = self._explainer.explain(query, cancellation, lambda p: events.put(("progress", p)))
                events.put(("done", results))
            except BaseException as err:  # noqa: BLE001 - handed to the handler thread, which re-raises
                events.put(("error", err))

        worker = threading.Thread(target=work, name="mollify-explain-stream", daemon=True)
        worker.start()
        while True:
            try:
                kind, value = events.get(timeout=_STREAM_POLL_S)
            except queue.Empty:
                continue
            if kind == "progress":
                yield value
            elif kind == "done":
                yield value
                return
            else:
                raise value

    # --------------------------------------------------------------------------- models

    def ListModels(
        self, request: pb.ListModelsRequest, context: grpc.ServicerContext
    ) -> pb.ListModelsResponse:
        call = self._call("ListModels", context)
        try:
            response = pb.ListModelsResponse(
                models=[codec.model_info_to_proto(m) for m in self._repository.list_models()]
            )
        except Exception as err:  # noqa: BLE001
            call.failed(err)
        call.succeeded()
        return response

    def GetModel(self, request: pb.GetModelRequest, context: grpc.ServicerContext) -> pb.GetModelResponse:
        call = self._call("GetModel", context)
        try:
            info = self._repository.entry(validate_model_name(request.name, "name")).info
            response = pb.GetModelResponse(model=codec.model_info_to_proto(info))
        except Exception as err:  # noqa: BLE001
            call.failed(err)
        call.succeeded()
        return response

    def ReloadModels(
        self, request: pb.ReloadModelsRequest, context: grpc.ServicerContext
    ) -> pb.ReloadModelsResponse:
        call = self._call("ReloadModels", context)
        try:
            response = codec.reload_result_to_proto(self._repository.reload())
        except Exception as err:  # noqa: BLE001
            call.failed(err)
        call.succeeded()
        return response


def _encode(model: str, results: list[InstanceExplanation], request_id: str) -> pb.ExplainResponse:
    return pb.ExplainResponse(
        model_name=model,
        explanations=[codec.explanation_to_proto(r) for r in results],
        request_id=request_id,
    )


# --------------------------------------------------------------------------------- registration


class _Undecodable:
    """Stands in for a request whose bytes did not parse; the handler answers INVALID_ARGUMENT."""

    def __init__(self, message_name: str, error: DecodeError) -> None:
        self.message_name = message_name
        self.error = error


def _tolerant(message_type: type[Message]) -> Callable[[bytes], Message | _Undecodable]:
    """``message_type.FromString`` that returns an :class:`_Undecodable` instead of raising.

    gRPC answers a deserializer's exception with a bare INTERNAL "Exception deserializing
    request!", never logged by the service and without a request id.
    """
    name = message_type.DESCRIPTOR.full_name

    def parse(data: bytes) -> Message | _Undecodable:
        try:
            return message_type.FromString(data)
        except DecodeError as err:
            return _Undecodable(name, err)

    return parse


def _guarded(servicer: ExplainerServicer, method: str, handler: Callable[..., Any]) -> Callable[..., Any]:
    def handle(request: Any, context: grpc.ServicerContext) -> Any:
        if isinstance(request, _Undecodable):
            servicer.undecodable(method, request, context)
        return handler(request, context)

    return handle


def add_servicer_to_server(servicer: ExplainerServicer, server: grpc.Server) -> None:
    """Register ``servicer`` as ``mollify.v1.ExplainerService`` on ``server``.

    Like the generated ``add_ExplainerServiceServicer_to_server``, but a request that does not
    parse reaches :meth:`ExplainerServicer.undecodable` instead of failing inside gRPC.
    """
    service = pb.DESCRIPTOR.services_by_name["ExplainerService"]
    handlers: dict[str, grpc.RpcMethodHandler] = {}
    for method in service.methods:
        if method.client_streaming:
            raise TypeError(f"{method.full_name}: client-streaming methods are not registered here")
        request_type: type[Message] = getattr(pb, method.input_type.name)
        response_type: type[Message] = getattr(pb, method.output_type.name)
        make = (
            grpc.unary_stream_rpc_method_handler
            if method.server_streaming
            else grpc.unary_unary_rpc_method_handler
        )
        handlers[method.name] = make(
            _guarded(servicer, method.name, getattr(servicer, method.name)),
            request_deserializer=_tolerant(request_type),
            response_serializer=response_type.SerializeToString,
        )
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(service.full_name, handlers),))
    server.add_registered_method_handlers(service.full_name, handlers)
