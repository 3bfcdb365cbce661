"""The ``mollify.v1.ExplainerService`` servicer: decode → domain call → encode, nothing else.

Every RPC runs inside :class:`_Call`, which gives it a request id (the client's ``x-request-id``
metadata when well formed, else a fresh one; echoed as trailing metadata), maps exceptions to
status codes through ``service/status.py``, logs one line per call and records metrics.
"""

from __future__ import annotations

import logging
import queue
import re
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any, NoReturn

import grpc

from protos.mollify.v1 import explainer_pb2 as pb
from protos.mollify.v1 import explainer_pb2_grpc as pb_grpc
from service import codec
from service.explainer import Explainer, ExplainQuery
from service.metrics import Metrics
from service.repository import ModelRepository, validate_model_name
from service.scheduler import Cancellation
from service.status import status_for
from service.vocabulary import ExplainProgress, InstanceExplanation

__all__ = ["ExplainerServicer"]

_log = logging.getLogger("mollify.service.rpc")
_REQUEST_ID = re.compile(r"[A-Za-z0-9_.:-]{1,64}")
# How often a streaming handler wakes to notice a client that went away.
_STREAM_POLL_S = 0.05


class _Call:
    """One RPC's bookkeeping: request id, timing, status mapping, the log line and metrics."""

    def __init__(self, method: str, context: grpc.ServicerContext, metrics: Metrics) -> None:
        self.method = method
        self.context = context
        self.metrics = metrics
        self.started = time.perf_counter()
        given = dict(context.invocation_metadata() or ()).get("x-request-id")
        self.id = str(given) if given and _REQUEST_ID.fullmatch(str(given)) else uuid.uuid4().hex[:16]
        context.set_trailing_metadata((("x-request-id", self.id),))
        self.fields: dict[str, Any] = {}

    def cancellation(self) -> Cancellation:
        remaining = self.context.time_remaining()
        deadline = time.monotonic() + remaining if remaining is not None else None
        cancellation = Cancellation(self.context.is_active, deadline)
        # Runs when the RPC ends for any reason, so work still going on stops at the next chunk.
        self.context.add_callback(cancellation.cancel)
        return cancellation

    def succeeded(self) -> None:
        self._record("OK", logging.INFO)

    def abandoned(self) -> None:
        self._record(grpc.StatusCode.CANCELLED.name, logging.INFO, error="the client stopped reading the stream")

    def failed(self, error: BaseException) -> NoReturn:
        code, message, unexpected = status_for(error, self.id)
        if unexpected:
            _log.error("unexpected error", exc_info=error, extra={"request_id": self.id, "method": self.method})
        level = logging.WARNING if code is grpc.StatusCode.INTERNAL else logging.INFO
        self._record(code.name, level, error=message if code is not grpc.StatusCode.INTERNAL else str(error))
        self.context.abort(code, message)
        raise AssertionError("context.abort returned")  # abort always raises; keeps type checkers honest

    def _record(self, code: str, level: int, **extra: Any) -> None:
        seconds = time.perf_counter() - self.started
        self.metrics.request_done(self.method, code, seconds)
        _log.log(level, "rpc", extra={"request_id": self.id, "method": self.method, "code": code,
                                      "ms": round(seconds * 1000, 3), **self.fields, **extra})


class ExplainerServicer(pb_grpc.ExplainerServiceServicer):
    """Translates ``mollify.v1`` calls into :class:`Explainer` and :class:`ModelRepository` calls."""

    def __init__(self, explainer: Explainer, repository: ModelRepository, metrics: Metrics) -> None:
        self._explainer = explainer
        self._repository = repository
        self._metrics = metrics

    # -------------------------------------------------------------------------- explain

    def Explain(self, request: pb.ExplainRequest, context: grpc.ServicerContext) -> pb.ExplainResponse:
        call = _Call("Explain", context, self._metrics)
        try:
            query = _decode(request)
            call.fields.update(_summary(query))
            results = self._explainer.explain(query, call.cancellation())
            response = _encode(query.model, results, call.id)
        except Exception as err:  # noqa: BLE001 - the boundary maps every error to a status
            call.failed(err)
        call.succeeded()
        return response

    def ExplainStream(
        self, request: pb.ExplainStreamRequest, context: grpc.ServicerContext
    ) -> Iterator[pb.ExplainStreamResponse]:
        call = _Call("ExplainStream", context, self._metrics)
        cancellation: Cancellation | None = None
        try:
            query = _decode(request.request)
            call.fields.update(_summary(query))
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

    def ListModels(self, request: pb.ListModelsRequest, context: grpc.ServicerContext) -> pb.ListModelsResponse:
        call = _Call("ListModels", context, self._metrics)
        try:
            response = pb.ListModelsResponse(models=[codec.model_info_to_proto(m) for m in self._repository.list_models()])
        except Exception as err:  # noqa: BLE001
            call.failed(err)
        call.succeeded()
        return response

    def GetModel(self, request: pb.GetModelRequest, context: grpc.ServicerContext) -> pb.GetModelResponse:
        call = _Call("GetModel", context, self._metrics)
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
        call = _Call("ReloadModels", context, self._metrics)
        try:
            response = codec.reload_result_to_proto(self._repository.reload())
        except Exception as err:  # noqa: BLE001
            call.failed(err)
        call.succeeded()
        return response


def _decode(request: pb.ExplainRequest) -> ExplainQuery:
    return ExplainQuery(
        model=validate_model_name(request.model_name),
        inputs=codec.tensor_to_array(request.inputs, "inputs"),
        target=codec.target_from_proto(request.target),
        method=codec.method_from_proto(request.method),
        seed=int(request.seed) if request.HasField("seed") else None,
        lower=codec.tensor_to_array(request.lower, "lower") if request.HasField("lower") else None,
        upper=codec.tensor_to_array(request.upper, "upper") if request.HasField("upper") else None,
    )


def _summary(query: ExplainQuery) -> dict[str, Any]:
    """What the log line of a request says about it (before the inputs are validated)."""
    return {"model": query.model, "instances": int(query.inputs.shape[0]) if query.inputs.ndim else 0}


def _encode(model: str, results: list[InstanceExplanation], request_id: str) -> pb.ExplainResponse:
    return pb.ExplainResponse(
        model_name=model,
        explanations=[codec.explanation_to_proto(r) for r in results],
        request_id=request_id,
    )
