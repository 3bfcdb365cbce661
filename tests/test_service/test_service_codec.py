"""service.codec: tensors, methods, targets and results survive the wire; malformed tensors are
refused with messages naming the field."""

from __future__ import annotations

import numpy as np
import pytest

from estimator.method import ClassTarget, CotangentTarget, Method, PredictedClassTarget
from protos.mollify.v1 import explainer_pb2 as pb
from service import codec
from service.client import MollifyError, as_target
from service.errors import InvalidRequestError
from service.vocabulary import ExplainTarget, InstanceExplanation, TopKTarget


def test_float_tensors_round_trip_little_endian() -> None:
    array = np.arange(24, dtype=np.float32).reshape(2, 3, 4) - 7.5
    tensor = codec.array_to_tensor(array)
    assert tensor.datatype == pb.DATA_TYPE_FP32
    assert list(tensor.shape) == [2, 3, 4]
    assert tensor.raw_contents == array.astype("<f4").tobytes()
    assert np.array_equal(codec.tensor_to_array(tensor, "x"), array)


def test_fp64_is_accepted_and_rounded() -> None:
    array = np.array([[0.1, 1e-3]], dtype=np.float64)
    tensor = pb.Tensor(datatype=pb.DATA_TYPE_FP64, shape=[1, 2], raw_contents=array.astype("<f8").tobytes())
    decoded = codec.tensor_to_array(tensor, "inputs")
    assert decoded.dtype == np.float32 and np.array_equal(decoded, array.astype(np.float32))


@pytest.mark.parametrize(
    ("tensor", "message"),
    [
        (
            pb.Tensor(datatype=pb.DATA_TYPE_INT64, shape=[1], raw_contents=b"\0" * 8),
            "inputs.datatype must be",
        ),
        (
            pb.Tensor(datatype=pb.DATA_TYPE_UNSPECIFIED, shape=[1], raw_contents=b"\0" * 4),
            "DATA_TYPE_UNSPECIFIED",
        ),
        (pb.Tensor(datatype=99, shape=[1], raw_contents=b"\0" * 4), "got 99"),
        (pb.Tensor(datatype=pb.DATA_TYPE_FP32, shape=[2, -1], raw_contents=b""), "non-negative"),
        (
            pb.Tensor(datatype=pb.DATA_TYPE_FP32, shape=[2, 3], raw_contents=b"\0" * 20),
            "holds 20 bytes; shape [2, 3]",
        ),
        (
            pb.Tensor(datatype=pb.DATA_TYPE_FP32, shape=[1 << 40, 1 << 40], raw_contents=b""),
            "describes more than 2**31 - 1 elements",
        ),
    ],
)
def test_malformed_tensors_name_the_field(tensor: pb.Tensor, message: str) -> None:
    with pytest.raises(InvalidRequestError, match="inputs") as caught:
        codec.tensor_to_array(tensor, "inputs")
    assert message in str(caught.value)


@pytest.mark.parametrize(
    "method",
    [
        Method(),
        Method(
            base="integrated_gradients",
            mode="fusion",
            kernel="rect",
            scale="truncated",
            alpha=0.05,
            samples=7,
            weight_draws=3,
            weight_sigma=0.1,
            weight_exclude=("bias*", "fc.*"),
            ig_steps=9,
            ig_rule="riemann_trapezoid",
            ig_baseline="white",
            ig_smoothing="outer",
            transform="vargrad",
            channel_axis=0,
            channel_reduction="max_abs",
            tol=0.05,
            max_samples=100,
        ),
        Method(
            mode="none", base="gradient_x_input", scale="adaptive", confidence=0.9, adaptive_rule="two_sided"
        ),
        Method(sigma=0.25, ig_baseline=np.full((2, 2), 0.5, np.float32)),
        Method(sigma=np.linspace(0.1, 0.4, 4, dtype=np.float32).reshape(2, 2), transform="smoothgrad_sq"),
    ],
)
def test_methods_round_trip(method: Method) -> None:
    decoded = codec.method_from_proto(codec.method_to_proto(method))
    for name in Method.__dataclass_fields__:
        expected, actual = getattr(method, name), getattr(decoded, name)
        if isinstance(expected, np.ndarray):
            assert isinstance(actual, np.ndarray) and np.array_equal(actual, expected), name
        else:
            assert actual == expected, name


def test_unset_method_fields_take_the_paper_defaults() -> None:
    method = codec.method_from_proto(pb.Method())
    assert method == Method()
    assert (
        method.alpha,
        method.confidence,
        method.samples,
        method.weight_draws,
        method.weight_sigma,
        method.ig_steps,
    ) == (0.2, 0.95, 50, 10, 0.2, 50)


def test_method_parameters_keep_their_precision() -> None:
    decoded = codec.method_from_proto(codec.method_to_proto(Method(sigma=0.05, ig_baseline=np.full(3, 0.1))))
    assert decoded.sigma == 0.05 and isinstance(decoded.sigma, float)
    assert isinstance(decoded.ig_baseline, np.ndarray) and decoded.ig_baseline.dtype == np.float64
    assert np.array_equal(decoded.ig_baseline, np.full(3, 0.1))


def test_explicit_zero_is_not_unset() -> None:
    method = codec.method_from_proto(pb.Method(samples=0, alpha=0.0))
    assert method.samples == 0 and method.alpha == 0.0


def test_unknown_enum_value_is_refused() -> None:
    with pytest.raises(
        InvalidRequestError,
        match=r"method\.mode must be one of .*SMOOTHING_MODE_NONE.*got the unknown value 42",
    ):
        codec.method_from_proto(pb.Method(mode=42))


@pytest.mark.parametrize(
    "target",
    [
        ExplainTarget(),
        ExplainTarget(ClassTarget(7)),
        ExplainTarget(TopKTarget(3), output="probabilities"),
        ExplainTarget(CotangentTarget(np.array([0.5, -1.0, 2.0], np.float32))),
    ],
)
def test_targets_round_trip(target: ExplainTarget) -> None:
    decoded = codec.target_from_proto(codec.target_to_proto(target))
    assert decoded.output == target.output
    assert type(decoded.selection) is type(target.selection)
    if isinstance(target.selection, CotangentTarget):
        assert isinstance(decoded.selection, CotangentTarget)
        assert np.array_equal(decoded.selection.cotangent, target.selection.cotangent)
    else:
        assert decoded.selection == target.selection


def test_shorthand_targets() -> None:
    assert as_target(3) == ExplainTarget(ClassTarget(3))
    assert as_target("predicted") == ExplainTarget(PredictedClassTarget())
    assert as_target(("top_k", 2)) == ExplainTarget(TopKTarget(2))
    assert as_target(("output", "probabilities")) == ExplainTarget(output="probabilities")
    assert isinstance(as_target(np.ones(3)).selection, CotangentTarget)
    for bad in ("best", ("top_k", "2"), True, 1.5):
        with pytest.raises(MollifyError) as caught:
            as_target(bad)  # type: ignore[arg-type]
        assert caught.value.code == "INVALID_ARGUMENT"


def test_explanations_round_trip() -> None:
    rng = np.random.default_rng(0)
    explanation = InstanceExplanation(
        attribution=rng.normal(size=(1, 8, 8)).astype(np.float32),
        standard_error=rng.random((1, 8, 8)).astype(np.float32),
        outputs=rng.normal(size=10).astype(np.float32),
        target_index=None,
        samples=50,
        gradient_evaluations=51,
        seed=2**64 - 1,
        inherent_noise=0.16,
        relative_error=0.04,
        queued_ms=1.5,
        computing_ms=20.25,
        provider="CPUExecutionProvider",
        description="SmoothGrad",
        instance_index=3,
        rank=1,
        output="logits",
        cotangent=rng.normal(size=10).astype(np.float32),
    )
    decoded = codec.explanation_from_proto(codec.explanation_to_proto(explanation))
    for name in InstanceExplanation.__dataclass_fields__:
        expected, actual = getattr(explanation, name), getattr(decoded, name)
        assert np.array_equal(actual, expected) if isinstance(expected, np.ndarray) else actual == expected, (
            name
        )
