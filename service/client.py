"""A typed Python client of the ``mollify.v1`` explanation service.

    with ExplainerClient("127.0.0.1:50051") as client:
        info = client.get_model("digits_cnn")
        [result] = client.explain("digits_cnn", images, method=Method(samples=100), seed=0)

Every failure, on the wire or in the arguments, raises :class:`MollifyError` whose ``code`` is a
gRPC status name such as ``"INVALID_ARGUMENT"``.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

import grpc
import numpy as np
from grpc_health.v1 import health_pb2, health_pb2_grpc

from estimator import check_seed
from estimator.errors import InvalidArgumentError
from estimator.method import (
    ClassTarget,
    CotangentTarget,
    DetectionTarget,
    Method,
    PredictedClassTarget,
    RegionTarget,
)
from estimator.targets import parse_region
from protos.mollify.v1 import explainer_pb2 as pb
from protos.mollify.v1 import explainer_pb2_grpc as pb_grpc
from service import client_chunks, codec
from service.errors import InvalidRequestError
from service.text import TextExplanation
from service.vocabulary import (
    ExplainProgress,
    ExplainTarget,
    InstanceExplanation,
    ModelInfo,
    ReloadResult,
    TopKTarget,
)

__all__ = [
    "DetectionTarget",
    "ExplainProgress",
    "ExplainTarget",
    "ExplainerClient",
    "InstanceExplanation",
    "ModelInfo",
    "MollifyError",
    "RegionTarget",
    "ReloadResult",
    "TargetLike",
    "TextExplanation",
    "TopKTarget",
    "as_target",
]

DEFAULT_ADDRESS = "127.0.0.1:50051"
# The server enforces its own message limit; the client's is set high so the server's applies.
_CLIENT_MESSAGE_LIMIT = 1 << 30

TargetLike = (
    int
    | str
    | tuple[str, Any]
    | np.ndarray
    | ExplainTarget
    | ClassTarget
    | PredictedClassTarget
    | CotangentTarget
    | TopKTarget
    | RegionTarget
    | DetectionTarget
)


class MollifyError(Exception):
    """A failed call: ``code`` is the gRPC status name (``"NOT_FOUND"``, ``"INVALID_ARGUMENT"``, ...)."""

    def __init__(self, code: str, message: str, *, request_id: str = "") -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.request_id = request_id


def as_target(target: TargetLike) -> ExplainTarget:
    """Normalise the shorthand target forms.

    Accepted: a class index ``int``; ``"predicted"``; ``("top_k", k)``; ``("output", name)`` (the
    predicted class of another tensor); a cotangent ``np.ndarray`` of one instance's output shape;
    dense outputs: ``("region", ":,10:20,5")`` (the sum over ``y[:, 10:20, 5]``; a tuple of indices
    and slices works too), ``("region", mask)`` (a bool array of the output's shape),
    ``"detection"`` (the highest class of the highest-scoring detection of a YOLOv8-style
    ``[4 + C, A]`` head) or ``("detection", i)`` (the highest class of detection ``i``); an
    estimator target (:class:`RegionTarget` and :class:`DetectionTarget` say more: the mean, the
    class, the layout); or an :class:`ExplainTarget` (which also combines ``output`` with any selection).
    """
    if isinstance(target, ExplainTarget):
        return target
    if isinstance(
        target,
        ClassTarget | PredictedClassTarget | CotangentTarget | TopKTarget | RegionTarget | DetectionTarget,
    ):
        return ExplainTarget(selection=target)
    if isinstance(target, bool):
        raise MollifyError("INVALID_ARGUMENT", f"target must be a class index, not the bool {target}")
    if isinstance(target, int | np.integer):
        return ExplainTarget(selection=ClassTarget(int(target)))
    if isinstance(target, np.ndarray):
        return ExplainTarget(selection=CotangentTarget(np.asarray(target, dtype=np.float32)))
    if target == "predicted":
        return ExplainTarget()
    if target == "detection":
        return ExplainTarget(selection=DetectionTarget())
    if isinstance(target, tuple) and len(target) == 2:
        kind, value = target
        if kind == "top_k" and isinstance(value, int | np.integer):
            return ExplainTarget(selection=TopKTarget(int(value)))
        if kind == "output" and isinstance(value, str):
            return ExplainTarget(output=value)
        if kind == "region":
            return ExplainTarget(selection=_region(value))
        if kind == "detection" and isinstance(value, int | np.integer) and not isinstance(value, bool):
            return ExplainTarget(selection=DetectionTarget(index=int(value)))
    raise MollifyError(
        "INVALID_ARGUMENT",
        "target must be a class index, 'predicted', ('top_k', k), ('output', name), a cotangent array, "
        f"('region', ':,10:20,5' or a mask), 'detection', ('detection', i) or an ExplainTarget, got {target!r}",
    )


def _region(value: Any) -> RegionTarget:
    """The region of ``("region", value)``: indexing text, a tuple of indices and slices, or a mask."""
    if isinstance(value, str):
        try:
            return RegionTarget(axes=parse_region(value, "target region"))
        except InvalidArgumentError as err:
            raise MollifyError("INVALID_ARGUMENT", str(err)) from None
    if isinstance(value, tuple):
        return RegionTarget(axes=value)
    if isinstance(value, np.ndarray):
        return RegionTarget(mask=value)
    raise MollifyError(
        "INVALID_ARGUMENT",
        f"('region', value): value must be indexing text such as ':,10:20,5', a tuple of indices and slices "
        f"or a mask array, got {value!r}",
    )


def _read_file_or_bytes(value: bytes | str | Path) -> bytes:
    return value if isinstance(value, bytes) else Path(value).read_bytes()


class ExplainerClient:
    """Talks to one server over one channel; use as a context manager or call :meth:`close`.

    Args:
        address: ``host:port`` of the server.
        token: bearer token sent as ``authorization: Bearer <token>`` metadata on every call.
        root_certificates: PEM bytes or a path to a PEM file; given, the channel uses TLS.
        timeout: default deadline of every call in seconds; ``None`` waits forever.
    """

    def __init__(
        self,
        address: str = DEFAULT_ADDRESS,
        *,
        token: str | None = None,
        root_certificates: bytes | str | Path | None = None,
        timeout: float | None = None,
    ) -> None:
        options = [
            ("grpc.max_send_message_length", _CLIENT_MESSAGE_LIMIT),
            ("grpc.max_receive_message_length", _CLIENT_MESSAGE_LIMIT),
        ]
        if root_certificates is not None:
            credentials = grpc.ssl_channel_credentials(_read_file_or_bytes(root_certificates))
            self._channel = grpc.secure_channel(address, credentials, options=options)
        else:
            self._channel = grpc.insecure_channel(address, options=options)
        # protoc writes no stubs for the generated gRPC module: its constructor is unannotated.
        self._stub = pb_grpc.ExplainerServiceStub(self._channel)  # type: ignore[no-untyped-call]
        self._health = health_pb2_grpc.HealthStub(self._channel)
        self._metadata: tuple[tuple[str, str], ...] = (("authorization", f"Bearer {token}"),) if token else ()
        self.address = address
        self.timeout = timeout
        # Per model: whether its request input is integer (token ids); asked once, on first integer input.
        self._integer_input: dict[str, bool] = {}
        # The server's max-instances, once a refusal named it (service/client_chunks.py).
        self._chunks = client_chunks.ChunkPlan()

    # ------------------------------------------------------------------------- lifecycle

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> ExplainerClient:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # ------------------------------------------------------------------------------ calls

    def _call(self, method: Any, request: Any, timeout: float | None) -> Any:
        try:
            return method(request, timeout=self._timeout(timeout), metadata=self._metadata)
        except grpc.RpcError as err:
            raise _to_error(err) from None

    def _timeout(self, timeout: float | None) -> float | None:
        return self.timeout if timeout is None else timeout

    def list_models(self, *, timeout: float | None = None) -> list[ModelInfo]:
        """Every model of the server's repository, ready or not, sorted by name."""
        response = self._call(self._stub.ListModels, pb.ListModelsRequest(), timeout)
        return [codec.model_info_from_proto(m) for m in response.models]

    def get_model(self, name: str, *, timeout: float | None = None) -> ModelInfo:
        """One model's description; ``MollifyError("NOT_FOUND")`` for an unknown name."""
        response = self._call(self._stub.GetModel, pb.GetModelRequest(name=name), timeout)
        return codec.model_info_from_proto(response.model)

    def reload_models(self, *, timeout: float | None = None) -> ReloadResult:
        """Ask the server to rescan its repository; returns what changed and every model."""
        response = self._call(self._stub.ReloadModels, pb.ReloadModelsRequest(), timeout)
        return codec.reload_result_from_proto(response)

    def health(self, service: str = "", *, timeout: float | None = None) -> str:
        """``"SERVING"``, ``"NOT_SERVING"`` or ``"SERVICE_UNKNOWN"`` (a model removed by a reload).

        ``service`` is ``""`` for the whole server, ``"mollify.v1.ExplainerService"``, or a model name;
        a name the server never knew raises ``MollifyError("NOT_FOUND")``.
        """
        response = self._call(self._health.Check, health_pb2.HealthCheckRequest(service=service), timeout)
        return str(health_pb2.HealthCheckResponse.ServingStatus.Name(response.status))

    def explain(
        self,
        model: str,
        inputs: np.ndarray | Sequence[np.ndarray],
        *,
        method: Method | None = None,
        target: TargetLike = "predicted",
        seed: int | None = None,
        lower: float | np.ndarray | None = None,
        upper: float | np.ndarray | None = None,
        timeout: float | None = None,
        extra_inputs: Mapping[str, np.ndarray] | None = None,
        explained_input: str = "",
    ) -> list[InstanceExplanation]:
        """Explain a batch of instances.

        Args:
            model: the model's name.
            inputs: ``(batch, *input_shape)`` floats, or a sequence of instances of ``input_shape``;
                integer arrays (token ids) travel as integers (INT64 or INT32), for models whose
                explained input is computed from them (``ModelInfo.request_inputs[0]``).
            method: the method; ``None`` is ``Method()`` (SmoothGrad, α = 0.2, N = 50).
            target: see :func:`as_target`.
            seed: seed of every random draw (each instance uses it); ``None`` lets the server choose
                one, echoed in each result.
            lower: input-domain lower bound overriding the model's (scalar or broadcastable to one instance).
            upper: like ``lower``.
            timeout: this call's deadline in seconds (default: the client's).
            extra_inputs: the model's other graph inputs by name (e.g. ``{"attention_mask": mask}``),
                ``(batch, *shape)`` or one instance's shape shared by all, any supported dtype;
                fed unchanged to every noisy sample.
            explained_input: a float tensor of the graph to explain with respect to instead of the
                model's (``ModelInfo.explained_input``), e.g. an embedding output or a feature map;
                results then have that tensor's instance shape (reduced per token at an embedding).
                Bounds: derived at an embedding lookup, else give ``lower`` and ``upper``.

        Returns:
            One explanation per instance in batch order; with a top-k target, k per instance
            (ranks in order within an instance).
        """

        def call(
            part: Any, part_seed: int | None, extra: Mapping[str, np.ndarray] | None
        ) -> list[InstanceExplanation]:
            request = self._explain_request(
                model, part, method, target, part_seed, lower, upper, extra, explained_input
            )
            response = self._call(self._stub.Explain, request, timeout)
            return [codec.explanation_from_proto(e) for e in response.explanations]

        sent = self._as_sent(model, inputs, timeout)
        if not isinstance(sent, np.ndarray):
            return call(sent, seed, extra_inputs)
        # Larger than the server's max-instances: several requests, one seed (service/client_chunks.py).
        return client_chunks.explain_in_chunks(
            call, sent, seed, extra_inputs, self._chunk_plan(model, timeout)
        )

    def explain_text(
        self,
        model: str,
        texts: str | Sequence[str],
        *,
        method: Method | None = None,
        target: TargetLike = "predicted",
        seed: int | None = None,
        timeout: float | None = None,
    ) -> list[TextExplanation]:
        """Explain texts with a text model, one value per token.

        Tokenizes with the tokenizer the server sends in ``GetModel`` (needs the ``tokenizers``
        package), sends the ids and the inputs it fills (attention mask, token type ids), and cuts
        each result down to the text's tokens. Other arguments as for :meth:`explain`.

        Returns:
            One :class:`~service.text.TextExplanation` per text (k per text with a top-k target).

        Raises:
            MollifyError: ``INVALID_ARGUMENT`` when the model has no tokenizer or a text has no
                tokens; any error of :meth:`explain`.
        """
        from service.text import TextError, TextTokenizer, text_explanations

        try:
            tokenizer = TextTokenizer(self.get_model(model, timeout=timeout))
            encoded = tokenizer.encode(texts)
        except TextError as err:
            raise MollifyError("INVALID_ARGUMENT", str(err)) from None
        ids, extra = tokenizer.request(encoded)
        results = self.explain(
            model, ids, method=method, target=target, seed=seed, timeout=timeout, extra_inputs=extra
        )
        try:
            return text_explanations(encoded, results)
        except TextError as err:
            raise MollifyError("FAILED_PRECONDITION", str(err)) from None

    def explain_stream(
        self,
        model: str,
        inputs: np.ndarray | Sequence[np.ndarray],
        *,
        method: Method | None = None,
        target: TargetLike = "predicted",
        seed: int | None = None,
        lower: float | np.ndarray | None = None,
        upper: float | np.ndarray | None = None,
        timeout: float | None = None,
        extra_inputs: Mapping[str, np.ndarray] | None = None,
        explained_input: str = "",
    ) -> Iterator[ExplainProgress | list[InstanceExplanation]]:
        """Like :meth:`explain`, yielding :class:`ExplainProgress` events, then the list of results last.

        Closing the iterator early cancels the request on the server.
        """

        def call(
            part: Any,
            part_seed: int | None,
            extra: Mapping[str, np.ndarray] | None,
        ) -> Iterator[ExplainProgress | list[InstanceExplanation]]:
            request = pb.ExplainStreamRequest(
                request=self._explain_request(
                    model, part, method, target, part_seed, lower, upper, extra, explained_input
                )
            )
            try:
                stream = self._stub.ExplainStream(
                    request, timeout=self._timeout(timeout), metadata=self._metadata
                )
            except grpc.RpcError as err:
                raise _to_error(err) from None
            return self._iterate_stream(stream)

        sent = self._as_sent(model, inputs, timeout)
        if not isinstance(sent, np.ndarray):
            return call(sent, seed, extra_inputs)
        return client_chunks.stream_in_chunks(
            call, sent, seed, extra_inputs, self._chunk_plan(model, timeout)
        )

    def _chunk_plan(self, model: str, timeout: float | None) -> client_chunks.ChunkPlan:
        """The server's learned max-instances, and how to find which extra inputs have a batch axis."""

        def ranks() -> dict[str, int]:
            return {t.name: len(t.shape) for t in self.get_model(model, timeout=timeout).graph_inputs}

        # The limit learned here is kept for the client's later calls; the ranks are this model's.
        self._chunks.ranks = ranks
        return self._chunks

    @staticmethod
    def _iterate_stream(call: Any) -> Iterator[ExplainProgress | list[InstanceExplanation]]:
        try:
            for message in call:
                if message.WhichOneof("event") == "progress":
                    yield codec.progress_from_proto(message.progress)
                else:
                    yield [codec.explanation_from_proto(e) for e in message.result.explanations]
        except grpc.RpcError as err:
            raise _to_error(err) from None
        finally:
            # A consumer that stops early must not leave the server computing.
            call.cancel()

    def _as_sent(
        self, model: str, inputs: np.ndarray | Sequence[np.ndarray], timeout: float | None
    ) -> np.ndarray | Sequence[np.ndarray]:
        """Integer ``inputs`` stay integers for a model whose request input is integer (token ids);
        for any other model they travel as float32 (8-bit pixels mean their values)."""
        if not isinstance(inputs, np.ndarray):
            try:
                inputs = np.stack([np.asarray(item) for item in inputs])
            except ValueError:
                return inputs
        if inputs.dtype.kind not in "iu":
            return inputs
        if model not in self._integer_input:
            info = self.get_model(model, timeout=timeout)
            sent = info.request_inputs[0].dtype if info.request_inputs else "float32"
            self._integer_input[model] = sent.startswith(("int", "uint"))
        return inputs if self._integer_input[model] else inputs.astype(np.float32)

    @staticmethod
    def _explain_request(
        model: str,
        inputs: np.ndarray | Sequence[np.ndarray],
        method: Method | None,
        target: TargetLike,
        seed: int | None,
        lower: float | np.ndarray | None,
        upper: float | np.ndarray | None,
        extra_inputs: Mapping[str, np.ndarray] | None = None,
        explained_input: str = "",
    ) -> pb.ExplainRequest:
        try:
            batch = np.asarray(inputs if isinstance(inputs, np.ndarray) else np.stack(list(inputs)))
            if batch.dtype.kind not in "fiu":
                raise MollifyError("INVALID_ARGUMENT", f"inputs must hold numbers, got dtype {batch.dtype}")
            request = pb.ExplainRequest(
                model_name=model,
                # Integer inputs (token ids) keep their type: the server checks them against the model's.
                inputs=codec.array_to_tensor(
                    batch if batch.dtype.kind in "iu" else batch.astype(np.float32, copy=False)
                ),
                target=codec.target_to_proto(as_target(target)),
                method=codec.method_to_proto(method if method is not None else Method()),
                explained_input=explained_input,
            )
            for name, value in (extra_inputs or {}).items():
                request.extra_inputs[name].CopyFrom(codec.array_to_tensor(np.asarray(value)))
            if seed is not None:
                request.seed = check_seed(seed)
            if lower is not None:
                request.lower.CopyFrom(codec.array_to_tensor(np.asarray(lower, dtype=np.float32)))
            if upper is not None:
                request.upper.CopyFrom(codec.array_to_tensor(np.asarray(upper, dtype=np.float32)))
        except (InvalidRequestError, ValueError, TypeError) as err:
            raise MollifyError("INVALID_ARGUMENT", str(err)) from None
        return request


def _to_error(err: grpc.RpcError) -> MollifyError:
    code = err.code() if hasattr(err, "code") else None
    details = err.details() if hasattr(err, "details") else str(err)
    request_id = ""
    if hasattr(err, "trailing_metadata"):
        for key, value in err.trailing_metadata() or ():
            if key == "x-request-id":
                request_id = str(value)
    name = code.name if isinstance(code, grpc.StatusCode) else "UNKNOWN"
    return MollifyError(name, details or name, request_id=request_id)
