"""Bad requests end with exactly the status a caller can act on, and a message naming the field."""

from __future__ import annotations

from collections.abc import Iterator

import grpc
import numpy as np
import pytest

from estimator.method import Method
from protos.mollify.v1 import explainer_pb2 as pb
from protos.mollify.v1 import explainer_pb2_grpc as pb_grpc
from service import codec
from service.client import ExplainerClient, MollifyError
from service.server import MollifyServer

DIGIT = np.full((1, 1, 8, 8), 0.5, np.float32)


@pytest.fixture(scope="module")
def stub(demo_server: MollifyServer) -> Iterator[pb_grpc.ExplainerServiceStub]:
    with grpc.insecure_channel(
        f"127.0.0.1:{demo_server.port}", options=[("grpc.max_send_message_length", 64 << 20)]
    ) as channel:
        yield pb_grpc.ExplainerServiceStub(channel)


def _request(**changes: object) -> pb.ExplainRequest:
    request = pb.ExplainRequest(
        model_name="digits_cnn",
        inputs=codec.array_to_tensor(DIGIT),
        method=codec.method_to_proto(Method(samples=4)),
    )
    for name, value in changes.items():
        if isinstance(value, pb.Tensor | pb.Method | pb.Target):
            getattr(request, name).CopyFrom(value)
        else:
            setattr(request, name, value)
    return request


def _status(
    stub: pb_grpc.ExplainerServiceStub, request: pb.ExplainRequest
) -> tuple[grpc.StatusCode, str, str]:
    with pytest.raises(grpc.RpcError) as caught:
        stub.Explain(request, timeout=30)
    error: grpc.Call = caught.value  # type: ignore[assignment]
    request_id = dict(error.trailing_metadata() or ()).get("x-request-id", "")
    return error.code(), error.details() or "", str(request_id)


def _method(**fields: object) -> pb.Method:
    return codec.method_to_proto(Method(**{"samples": 4, **fields}))  # type: ignore[arg-type]


CASES = [
    ("unknown model", _request(model_name="no_such_model"), grpc.StatusCode.NOT_FOUND, "no_such_model"),
    (
        "path in model name",
        _request(model_name="../digits_cnn"),
        grpc.StatusCode.INVALID_ARGUMENT,
        "model_name",
    ),
    ("empty model name", _request(model_name=""), grpc.StatusCode.INVALID_ARGUMENT, "model_name"),
    (
        "wrong dtype",
        _request(inputs=pb.Tensor(datatype=pb.DATA_TYPE_INT64, shape=[1, 1, 8, 8], raw_contents=b"\0" * 512)),
        grpc.StatusCode.INVALID_ARGUMENT,
        "inputs.datatype",
    ),
    (
        "wrong shape",
        _request(inputs=codec.array_to_tensor(np.zeros((1, 8, 8), np.float32))),
        grpc.StatusCode.INVALID_ARGUMENT,
        "inputs.shape must be [batch, 1, 8, 8], got [1, 8, 8]",
    ),
    (
        "empty batch",
        _request(inputs=codec.array_to_tensor(np.zeros((0, 1, 8, 8), np.float32))),
        grpc.StatusCode.INVALID_ARGUMENT,
        "at least one instance",
    ),
    (
        "byte length",
        _request(inputs=pb.Tensor(datatype=pb.DATA_TYPE_FP32, shape=[1, 1, 8, 8], raw_contents=b"\0" * 255)),
        grpc.StatusCode.INVALID_ARGUMENT,
        "inputs.raw_contents holds 255 bytes",
    ),
    (
        "NaN input",
        _request(
            inputs=codec.array_to_tensor(np.where(np.arange(64).reshape(1, 1, 8, 8) == 9, np.nan, DIGIT))
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
        "inputs must be finite",
    ),
    (
        "Inf input",
        _request(inputs=codec.array_to_tensor(np.full((1, 1, 8, 8), np.inf, np.float32))),
        grpc.StatusCode.INVALID_ARGUMENT,
        "inputs must be finite",
    ),
    (
        "class out of range",
        _request(target=pb.Target(class_index=10)),
        grpc.StatusCode.INVALID_ARGUMENT,
        "10",
    ),
    ("negative class", _request(target=pb.Target(class_index=-1)), grpc.StatusCode.INVALID_ARGUMENT, "-1"),
    (
        "top_k beyond classes",
        _request(target=pb.Target(top_k=11)),
        grpc.StatusCode.INVALID_ARGUMENT,
        "target.top_k must be in [1, 10], got 11",
    ),
    ("top_k zero", _request(target=pb.Target(top_k=0)), grpc.StatusCode.INVALID_ARGUMENT, "target.top_k"),
    (
        "cotangent shape",
        _request(target=pb.Target(cotangent=codec.array_to_tensor(np.ones(3, np.float32)))),
        grpc.StatusCode.INVALID_ARGUMENT,
        "target.cotangent.shape must be the explained tensor's instance shape [10]",
    ),
    (
        "unknown tensor",
        _request(target=pb.Target(output="nope")),
        grpc.StatusCode.INVALID_ARGUMENT,
        "target.output 'nope' is not a tensor",
    ),
    ("zero samples", _request(method=_method(samples=0)), grpc.StatusCode.INVALID_ARGUMENT, "samples"),
    ("negative samples", _request(method=_method(samples=-3)), grpc.StatusCode.INVALID_ARGUMENT, "samples"),
    (
        "absurd samples",
        _request(method=_method(samples=10**12)),
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        "--max-evaluations / MOLLIFY_MAX_EVALUATIONS",
    ),
    (
        "absurd IG steps",
        _request(method=_method(base="integrated_gradients", ig_rule="riemann_trapezoid", ig_steps=10**6)),
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        "max-evaluations",
    ),
    (
        "gauss-legendre beyond its cap",
        _request(method=_method(base="integrated_gradients", ig_steps=8000)),
        grpc.StatusCode.INVALID_ARGUMENT,
        "at most 1024 path points",
    ),
    (
        "unknown kernel",
        _request(method=_method(kernel="laplace")),
        grpc.StatusCode.INVALID_ARGUMENT,
        "laplace",
    ),
    ("unknown enum", _request(method=pb.Method(mode=17)), grpc.StatusCode.INVALID_ARGUMENT, "method.mode"),
    ("alpha zero", _request(method=_method(alpha=0.0)), grpc.StatusCode.INVALID_ARGUMENT, "alpha"),
    (
        "confidence one",
        _request(method=_method(scale="adaptive", confidence=1.0)),
        grpc.StatusCode.INVALID_ARGUMENT,
        "confidence",
    ),
    (
        "lower above upper",
        _request(lower=codec.array_to_tensor(np.float32(1.0)), upper=codec.array_to_tensor(np.float32(0.0))),
        grpc.StatusCode.INVALID_ARGUMENT,
        "lower must be below upper",
    ),
    (
        "lower equals upper",
        _request(lower=codec.array_to_tensor(np.float32(0.5)), upper=codec.array_to_tensor(np.float32(0.5))),
        grpc.StatusCode.INVALID_ARGUMENT,
        "lower must be below upper",
    ),
    (
        "bound shape",
        _request(lower=codec.array_to_tensor(np.zeros(3, np.float32))),
        grpc.StatusCode.INVALID_ARGUMENT,
        "lower.shape must broadcast",
    ),
    (
        "too many instances",
        _request(inputs=codec.array_to_tensor(np.zeros((65, 1, 8, 8), np.float32))),
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        "--max-instances / MOLLIFY_MAX_INSTANCES",
    ),
]


@pytest.mark.parametrize(("request_", "code", "fragment"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_request_status(
    stub: pb_grpc.ExplainerServiceStub, request_: pb.ExplainRequest, code: grpc.StatusCode, fragment: str
) -> None:
    actual, details, request_id = _status(stub, request_)
    assert actual == code, details
    assert fragment in details
    assert request_id  # every answer carries the id the server logged it under


def test_oversize_message_is_refused_by_grpc(
    stub: pb_grpc.ExplainerServiceStub, demo_server: MollifyServer
) -> None:
    count = demo_server.settings.max_message_bytes // 256 + 1
    big = _request(inputs=codec.array_to_tensor(np.zeros((count, 1, 8, 8), np.float32)))
    code, details, _ = _status(stub, big)
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED, details


def test_get_model_errors(client: ExplainerClient) -> None:
    with pytest.raises(MollifyError) as caught:
        client.get_model("missing")
    assert caught.value.code == "NOT_FOUND" and "known models" in caught.value.message
    with pytest.raises(MollifyError) as caught:
        client.get_model("a/b")
    assert caught.value.code == "INVALID_ARGUMENT"


def test_client_reports_status_names(client: ExplainerClient) -> None:
    with pytest.raises(MollifyError) as caught:
        client.explain("digits_cnn", DIGIT, method=Method(kernel="laplace"))
    assert caught.value.code == "INVALID_ARGUMENT"
    assert caught.value.request_id
    assert str(caught.value).startswith("INVALID_ARGUMENT: ")


def test_server_still_serves_after_bad_requests(client: ExplainerClient) -> None:
    assert client.health() == "SERVING"
    [result] = client.explain("digits_cnn", DIGIT, method=Method(samples=2), seed=0)
    assert result.attribution.shape == (1, 8, 8)
