"""Property: 1000+ malformed (and occasionally valid) Explain requests never crash, hang or leak an
unexpected error: every answer is a response or a deliberate status."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from types import SimpleNamespace

import grpc
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from protos.mollify.v1 import explainer_pb2 as pb
from protos.mollify.v1 import explainer_pb2_grpc as pb_grpc
from service.server import MollifyServer
from service.settings import Settings

# Statuses a well-behaved server may answer a bad request with. INTERNAL only for deliberate
# model-evaluation errors (e.g. a finite input that overflows the model), never for a bug.
ALLOWED = {
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
    grpc.StatusCode.FAILED_PRECONDITION,
    grpc.StatusCode.INTERNAL,
}
_DTYPES = {1: "<f4", 2: "<f8", 3: "<f2", 4: "<i4", 5: "<i8", 6: "u1", 7: "?"}

floats = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True, width=32),
    st.sampled_from([0.0, 0.5, 1.0, -1.0, 1e30, -1e-30]),
)


@st.composite
def tensors(draw: st.DrawFn, shape: tuple[int, ...] | None = None) -> pb.Tensor:
    datatype = draw(st.sampled_from([0, 1, 1, 1, 1, 2, 3, 4, 5, 6, 7, 42]))
    if shape is None or draw(st.booleans()):
        shape = tuple(draw(st.lists(st.integers(-2, 9), max_size=5)))
    size = int(np.prod([max(d, 0) for d in shape])) if shape else 1
    itemsize = np.dtype(_DTYPES.get(datatype, "<f4")).itemsize
    if draw(st.integers(0, 5)) == 0:
        raw = draw(st.binary(max_size=64))  # arbitrary bytes: usually the wrong length
    elif datatype in (1, 2) and size <= 256:
        values = draw(st.lists(floats, min_size=size, max_size=size))
        raw = np.asarray(values, dtype=np.float64).astype(_DTYPES[datatype]).tobytes()
    else:
        raw = bytes(size * itemsize) if size * itemsize <= 1 << 16 else b""
    return pb.Tensor(datatype=datatype, shape=list(shape), raw_contents=raw)


@st.composite
def methods(draw: st.DrawFn) -> pb.Method:
    message = pb.Method(
        base=draw(st.integers(0, 4)),
        mode=draw(st.integers(0, 5)),
        scale=draw(st.integers(0, 4)),
        kernel=draw(
            st.sampled_from(["", "gaussian", "poisson", "rect", "sigmoid", "hyperbolic", "laplace", "\0"])
        ),
        adaptive_rule=draw(st.integers(0, 3)),
        ig_rule=draw(st.integers(0, 6)),
        ig_baseline=draw(st.integers(0, 4)),
        ig_smoothing=draw(st.integers(0, 3)),
        transform=draw(st.integers(0, 5)),
        channel_reduction=draw(st.integers(0, 5)),
        weight_exclude=draw(st.lists(st.sampled_from(["*", "*bias*", "["]), max_size=2)),
    )
    for name, strategy in (
        ("samples", st.integers(-3, 6) | st.just(2**62)),
        ("weight_draws", st.integers(-1, 3)),
        ("ig_steps", st.integers(-1, 4) | st.just(10**9)),
        ("max_samples", st.integers(-1, 8)),
        ("channel_axis", st.integers(-3, 3)),
        ("alpha", floats),
        ("confidence", floats),
        ("weight_sigma", floats),
        ("target_relative_error", floats),
    ):
        if draw(st.booleans()):
            setattr(message, name, draw(strategy))
    if draw(st.integers(0, 4)) == 0:
        message.sigma.CopyFrom(draw(tensors((1, 8, 8))))
    if draw(st.integers(0, 6)) == 0:
        message.ig_baseline_tensor.CopyFrom(draw(tensors((1, 8, 8))))
    return message


@st.composite
def wild_requests(draw: st.DrawFn) -> pb.ExplainRequest:
    """Every field drawn at random: almost always malformed somewhere."""
    request = pb.ExplainRequest(
        model_name=draw(
            st.sampled_from(
                ["digits_cnn", "digits_cnn", "breast_cancer_mlp", "", "..", "nope", "a/b", "digits_cnn\n"]
            )
        ),
        inputs=draw(tensors((2, 1, 8, 8))),
        method=draw(methods()),
    )
    kind = draw(st.integers(0, 5))
    if kind == 1:
        request.target.class_index = draw(st.integers(-(2**63), 2**63 - 1) | st.integers(-2, 12))
    elif kind == 2:
        request.target.top_k = draw(st.integers(-1, 12))
    elif kind == 3:
        request.target.cotangent.CopyFrom(draw(tensors((10,))))
    elif kind == 4:
        request.target.output = draw(st.sampled_from(["probabilities", "logits", "input", "", "nope"]))
    if draw(st.booleans()):
        request.seed = draw(st.integers(0, 2**64 - 1))
    if draw(st.integers(0, 3)) == 0:
        request.lower.CopyFrom(draw(tensors(())))
    if draw(st.integers(0, 3)) == 0:
        request.upper.CopyFrom(draw(tensors(())))
    return request


# One field of an otherwise valid request, set to a drawn value (often a bad one).
_MUTATIONS = {
    "inputs": lambda draw: ("inputs", draw(tensors((1, 1, 8, 8)))),
    "samples": lambda draw: ("method.samples", draw(st.integers(-2, 8) | st.sampled_from([10**6, 2**62]))),
    "alpha": lambda draw: ("method.alpha", draw(floats)),
    "kernel": lambda draw: (
        "method.kernel",
        draw(st.text(max_size=8) | st.sampled_from(["rect", "poisson"])),
    ),
    "mode": lambda draw: ("method.mode", draw(st.integers(0, 6))),
    "base": lambda draw: ("method.base", draw(st.integers(0, 4))),
    "scale": lambda draw: ("method.scale", draw(st.integers(0, 4))),
    "confidence": lambda draw: ("method.confidence", draw(floats)),
    "channel_axis": lambda draw: ("method.channel_axis", draw(st.integers(-4, 4))),
    "reduction": lambda draw: ("method.channel_reduction", draw(st.integers(0, 5))),
    "transform": lambda draw: ("method.transform", draw(st.integers(0, 5))),
    "ig_steps": lambda draw: ("method.ig_steps", draw(st.integers(-1, 5))),
    "tol": lambda draw: ("method.target_relative_error", draw(floats)),
    "sigma": lambda draw: ("method.sigma", draw(tensors((1, 8, 8)))),
    "class": lambda draw: ("target.class_index", draw(st.integers(-3, 12))),
    "top_k": lambda draw: ("target.top_k", draw(st.integers(-1, 12))),
    "output": lambda draw: (
        "target.output",
        draw(st.sampled_from(["probabilities", "input", "nope", "logits"])),
    ),
    "cotangent": lambda draw: ("target.cotangent", draw(tensors((10,)))),
    "lower": lambda draw: ("lower", draw(tensors(()))),
    "upper": lambda draw: ("upper", draw(tensors(()))),
    "seed": lambda draw: ("seed", draw(st.integers(0, 2**64 - 1))),
    "nothing": lambda draw: ("", None),
}


@st.composite
def near_valid_requests(draw: st.DrawFn) -> pb.ExplainRequest:
    """A valid small request with one field drawn at random: reaches deeper validation and success."""
    batch = draw(st.integers(1, 2))
    pixels = np.asarray(
        draw(st.lists(st.floats(0, 1, width=32), min_size=64 * batch, max_size=64 * batch)), dtype="<f4"
    )
    request = pb.ExplainRequest(
        model_name="digits_cnn",
        inputs=pb.Tensor(datatype=pb.DATA_TYPE_FP32, shape=[batch, 1, 8, 8], raw_contents=pixels.tobytes()),
        method=pb.Method(samples=draw(st.integers(1, 4)), weight_draws=2, ig_steps=3),
    )
    path, value = _MUTATIONS[draw(st.sampled_from(sorted(_MUTATIONS)))](draw)
    if path:
        *parents, name = path.split(".")
        message = request
        for parent in parents:
            message = getattr(message, parent)
        if isinstance(value, pb.Tensor):
            getattr(message, name).CopyFrom(value)
        else:
            setattr(message, name, value)
    return request


def requests() -> st.SearchStrategy[pb.ExplainRequest]:
    return st.one_of(wild_requests(), near_valid_requests())


@pytest.fixture(scope="module")
def fuzz_server(demo_settings: Settings, helpers: SimpleNamespace) -> Iterator[MollifyServer]:
    server = helpers.start_server(
        dataclasses.replace(demo_settings, max_evaluations=200, max_queued_requests=2)
    )
    yield server
    server.stop(0).wait()


@pytest.fixture(scope="module")
def fuzz_stub(fuzz_server: MollifyServer) -> Iterator[pb_grpc.ExplainerServiceStub]:
    with grpc.insecure_channel(f"127.0.0.1:{fuzz_server.port}") as channel:
        yield pb_grpc.ExplainerServiceStub(channel)


def test_every_malformed_request_gets_a_status_and_the_server_stays_healthy(
    fuzz_server: MollifyServer, fuzz_stub: pb_grpc.ExplainerServiceStub
) -> None:
    answered: dict[str, int] = {}

    @settings(max_examples=1000, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
    @given(request=requests())
    def gets_a_status(request: pb.ExplainRequest) -> None:
        try:
            response = fuzz_stub.Explain(request, timeout=20)
        except grpc.RpcError as error:
            code = error.code()  # type: ignore[attr-defined]
            details = error.details() or ""  # type: ignore[attr-defined]
            assert code in ALLOWED, f"{code}: {details}"
            assert "internal error" not in details, details
            answered[code.name] = answered.get(code.name, 0) + 1
            return
        assert response.explanations
        answered["OK"] = answered.get("OK", 0) + 1

    gets_a_status()
    assert sum(answered.values()) >= 1000, answered
    # The generator reached both deep validation and success, not only the first check.
    assert answered.get("OK", 0) >= 50 and answered.get("INVALID_ARGUMENT", 0) >= 50, answered
    assert fuzz_server.scheduler.computing == 0 and fuzz_server.scheduler.queued == 0
    digit = np.full((1, 1, 8, 8), 0.5, np.float32)
    request = pb.ExplainRequest(
        model_name="digits_cnn",
        inputs=pb.Tensor(datatype=1, shape=[1, 1, 8, 8], raw_contents=digit.tobytes()),
        method=pb.Method(samples=2),
    )
    assert len(fuzz_stub.Explain(request, timeout=20).explanations) == 1
