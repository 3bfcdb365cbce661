"""Hostile requests against a real server on loopback: malformed shapes, values that overflow
float32, bytes that are no protobuf message and megabyte strings all end in INVALID_ARGUMENT (or
NOT_FOUND) naming the field, with a request id, a short status message and short log lines."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import grpc
import numpy as np
import pytest

from estimator.method import Method
from protos.mollify.v1 import explainer_pb2 as pb
from protos.mollify.v1 import explainer_pb2_grpc as pb_grpc
from service import codec
from service.echo import ECHO_LIMIT, MESSAGE_LIMIT
from service.logs import JsonFormatter, KeyValueFormatter
from service.server import MollifyServer

DIGIT = np.full((1, 1, 8, 8), 0.5, np.float32)
HUGE = 3e38  # finite in float32 and float64; noise, spans and squares of it are not
LONG = 3 << 20  # characters: far beyond gRPC's 16 KiB metadata limit, within the test server's message limit


@pytest.fixture(scope="module")
def channel(demo_server: MollifyServer) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(
        f"127.0.0.1:{demo_server.port}", options=[("grpc.max_send_message_length", 64 << 20)]
    ) as channel:
        yield channel


@pytest.fixture(scope="module")
def stub(channel: grpc.Channel) -> pb_grpc.ExplainerServiceStub:
    return pb_grpc.ExplainerServiceStub(channel)


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


def _method(**fields: object) -> pb.Method:
    return codec.method_to_proto(Method(**{"samples": 4, **fields}))  # type: ignore[arg-type]


def _fp64(value: object) -> pb.Tensor:
    return codec.array_to_tensor(np.asarray(value, dtype=np.float64), keep_float64=True)


def _failure(call: grpc.Call) -> tuple[grpc.StatusCode, str, str]:
    request_id = dict(call.trailing_metadata() or ()).get("x-request-id", "")
    return call.code(), call.details() or "", str(request_id)


def _status(
    stub: pb_grpc.ExplainerServiceStub, request: pb.ExplainRequest
) -> tuple[grpc.StatusCode, str, str]:
    with pytest.raises(grpc.RpcError) as caught:
        stub.Explain(request, timeout=30)
    return _failure(caught.value)  # type: ignore[arg-type]


MALFORMED = [
    (
        "zero and huge dimension",
        _request(inputs=pb.Tensor(datatype=pb.DATA_TYPE_FP32, shape=[0, 1 << 62, 8, 8])),
        "inputs.shape [0, 4611686018427387904, 8, 8] describes more than 2**31 - 1 elements",
    ),
    (
        "zero and several huge dimensions",
        _request(inputs=pb.Tensor(datatype=pb.DATA_TYPE_FP32, shape=[0, 1 << 40, 1 << 40, 1 << 40])),
        "inputs.shape",
    ),
    (
        "65 dimensions",
        _request(inputs=pb.Tensor(datatype=pb.DATA_TYPE_FP32, shape=[1] * 65, raw_contents=b"\0" * 4)),
        "inputs.shape has 65 dimensions; at most 32",
    ),
    (
        "10,000 dimensions",
        _request(inputs=pb.Tensor(datatype=pb.DATA_TYPE_FP32, shape=[1] * 10_000, raw_contents=b"\0" * 4)),
        "inputs.shape has 10000 dimensions",
    ),
    (
        "65-dimensional bound",
        _request(lower=pb.Tensor(datatype=pb.DATA_TYPE_FP32, shape=[1] * 65, raw_contents=b"\0" * 4)),
        "lower.shape has 65 dimensions",
    ),
    ("sigma 3e38", _request(method=_method(sigma=HUGE)), "method.sigma must be at most 1e+19 in magnitude"),
    ("sigma array 3e38", _request(method=_method(sigma=np.full((1, 8, 8), HUGE))), "method.sigma"),
    (
        "IG baseline 3e38",
        _request(method=_method(base="integrated_gradients", ig_baseline=np.full((1, 8, 8), HUGE))),
        "method.ig_baseline_tensor must be at most 1e+19",
    ),
    ("lower -3e38 in FP64", _request(lower=_fp64(-HUGE)), "lower must be at most 1e+19"),
    ("bounds ±3e38", _request(lower=_fp64(-HUGE), upper=_fp64(HUGE)), "lower must be at most 1e+19"),
    (
        "upper 3e38 in FP32",
        _request(upper=codec.array_to_tensor(np.float32(HUGE))),
        "upper must be at most 1e+19",
    ),
    (
        "upper 1e39 in FP64 (inf in FP32)",
        _request(upper=_fp64(1e39)),
        "upper holds 1e+39, beyond the float32 range",
    ),
    (
        "inputs 3e38",
        _request(inputs=codec.array_to_tensor(np.full((1, 1, 8, 8), HUGE, np.float32))),
        "inputs must be at most 1e+19 in magnitude",
    ),
    (
        "inputs 1e300 in FP64",
        _request(inputs=_fp64(np.full((1, 1, 8, 8), 1e300))),
        "inputs holds 1e+300 at index [0, 0, 0, 0], beyond the float32 range",
    ),
    (
        "cotangent 3e38",
        _request(target=pb.Target(cotangent=codec.array_to_tensor(np.full(10, HUGE, np.float32)))),
        "target.cotangent must be at most 1e+19",
    ),
]


@pytest.mark.parametrize(("request_", "fragment"), [c[1:] for c in MALFORMED], ids=[c[0] for c in MALFORMED])
def test_malformed_values_are_invalid_argument_naming_the_field(
    stub: pb_grpc.ExplainerServiceStub, request_: pb.ExplainRequest, fragment: str
) -> None:
    code, details, request_id = _status(stub, request_)
    assert code == grpc.StatusCode.INVALID_ARGUMENT, details
    assert fragment in details
    assert request_id


@pytest.mark.parametrize("method", ["Explain", "ExplainStream", "GetModel"])
def test_undecodable_bytes_are_invalid_argument_with_a_logged_request_id(
    channel: grpc.Channel, method: str, caplog: pytest.LogCaptureFixture
) -> None:
    path = f"/mollify.v1.ExplainerService/{method}"
    garbage = b"\xff\xff\xff\xff\xff"
    with caplog.at_level(logging.INFO, logger="mollify"), pytest.raises(grpc.RpcError) as caught:
        if method == "ExplainStream":
            list(channel.unary_stream(path)(garbage, timeout=30))
        else:
            channel.unary_unary(path)(garbage, timeout=30)
    code, details, request_id = _failure(caught.value)  # type: ignore[arg-type]
    assert code == grpc.StatusCode.INVALID_ARGUMENT, details
    assert "is not a valid mollify.v1." in details and "explainer.proto" in details
    assert request_id
    logged = [r for r in caplog.records if getattr(r, "request_id", None) == request_id]
    assert [(r.method, r.code) for r in logged] == [(method, "INVALID_ARGUMENT")]  # type: ignore[attr-defined]


LONG_STRINGS = [
    ("model name", _request(model_name="x" * LONG), grpc.StatusCode.NOT_FOUND, "model_name 'xxxx"),
    (
        "kernel",
        _request(method=pb.Method(kernel="k" * LONG, samples=4)),
        grpc.StatusCode.INVALID_ARGUMENT,
        "method.kernel",
    ),
    (
        "output name",
        _request(target=pb.Target(output="o" * LONG)),
        grpc.StatusCode.INVALID_ARGUMENT,
        "target.output 'oooo",
    ),
]


@pytest.mark.parametrize(
    ("request_", "code", "fragment"), [c[1:] for c in LONG_STRINGS], ids=[c[0] for c in LONG_STRINGS]
)
def test_megabyte_strings_are_echoed_cut_in_status_and_log(
    stub: pb_grpc.ExplainerServiceStub,
    request_: pb.ExplainRequest,
    code: grpc.StatusCode,
    fragment: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.INFO, logger="mollify"):
        actual, details, request_id = _status(stub, request_)
    # Whole, the value overflows gRPC's metadata limit: the client would see RESOURCE_EXHAUSTED
    # "received metadata size exceeds hard limit" instead of the real error.
    assert actual == code, details
    assert fragment in details
    assert "…" in details and len(details) <= MESSAGE_LIMIT
    assert max(len(run) for run in details.split()) <= ECHO_LIMIT + 1
    records = [r for r in caplog.records if getattr(r, "request_id", None) == request_id]
    assert records
    for record in records:
        for formatter in (JsonFormatter(), KeyValueFormatter()):
            assert len(formatter.format(record)) < 4 * MESSAGE_LIMIT
