"""Extension points: a base method is one class, and the registries, the proto and the CLI agree."""

from __future__ import annotations

import argparse
import typing
from collections.abc import Iterator

import numpy as np
import pytest

from estimator import ClassTarget, InvalidArgumentError, Method, describe, explain, planned_evaluations
from estimator.bases import (
    PointwiseAttributor,
    base_method_names,
    get_base_method,
    register_base_method,
    unregister_base_method,
)
from estimator.kernels import KERNEL_NAMES
from estimator.method import BaseMethod, SamplerName, SmoothingMode
from estimator.samplers import SAMPLER_NAMES
from estimator.smoothing import get_smoothing, smoothing_names
from estimator.testing import QuadraticModel
from protos.mollify.v1 import explainer_pb2 as pb
from service.cli.method_flags import add_method_arguments

A = np.array([[2.0, 0.5, -1.0], [0.5, -1.5, 0.25], [-1.0, 0.25, 0.75]])
X = np.array([0.3, -0.2, 0.1])


class GradientSquared(PointwiseAttributor):
    """``G(x)²``: the squared gradient of one draw (its mean under input noise is SmoothGrad-squared's
    first moment without the transform)."""

    name = "gradient_squared"

    def title(self, method: Method) -> str:
        return "Gradient²"

    def attribution(self, points: np.ndarray, gradients: np.ndarray) -> np.ndarray:
        return np.square(gradients.astype(np.float64))


@pytest.fixture
def gradient_squared() -> Iterator[str]:
    register_base_method(GradientSquared())
    try:
        yield GradientSquared.name
    finally:
        unregister_base_method(GradientSquared.name)


def _model_gradient(x: np.ndarray) -> np.ndarray:
    """``A x`` as the model returns it (computed in float64 from the float32 input, sent as float32)."""
    x64 = x.astype(np.float32).astype(np.float64)
    return (x64[None, :] * (0.5 * (A + A.T))).sum(axis=1).astype(np.float32).astype(np.float64)


def test_a_new_base_method_is_one_class_exact_without_noise(gradient_squared: str) -> None:
    method = Method(base=gradient_squared, mode="none")  # type: ignore[arg-type]
    result = explain(QuadraticModel(A), X, method, ClassTarget(0), lower=-1.0, upper=1.0, seed=1)
    np.testing.assert_allclose(result.attribution, _model_gradient(X) ** 2, rtol=1e-12, atol=0.0)
    assert result.gradient_evaluations == 1  # a pointwise method reuses the clean pass
    assert planned_evaluations(method, ClassTarget(0)) == 1
    assert result.description == "Gradient²"


def test_a_new_base_method_is_smoothed_like_any_other(gradient_squared: str) -> None:
    # Gradient A(x + u) with u ~ N(0, σ² I): E[(A(x + u))_i²] = (A x)_i² + σ² Σ_j A_ij².
    sigma, samples = 0.3, 4000
    method = Method(base=gradient_squared, mode="input", sigma=sigma, samples=samples)  # type: ignore[arg-type]
    result = explain(QuadraticModel(A), X, method, ClassTarget(0), lower=-1.0, upper=1.0, seed=5)
    expected = (A @ X) ** 2 + sigma**2 * np.square(A).sum(axis=1)
    assert np.all(np.abs(result.attribution - expected) <= 4.0 * result.standard_error + 1e-6)
    # Not the squared smoothed gradient: the noise term is resolved.
    assert np.all(np.abs(result.attribution - (A @ X) ** 2) > 4.0 * result.standard_error)
    assert result.samples == samples
    assert describe(method) == f"SmoothGrad(σ=given, N={samples}) × Gradient²"


def test_registration_is_checked_and_undone(gradient_squared: str) -> None:
    assert gradient_squared in base_method_names()
    with pytest.raises(ValueError, match="already registered"):
        register_base_method(GradientSquared())
    with pytest.raises(ValueError, match="built-in"):
        unregister_base_method("gradient")


def test_unknown_names_list_the_registries() -> None:
    with pytest.raises(InvalidArgumentError, match="method.base: expected one of gradient, gradient_x_input"):
        planned_evaluations(Method(base="gradient_squared"))  # type: ignore[arg-type]
    with pytest.raises(
        InvalidArgumentError, match="method.mode: expected one of none, input, parameter, fusion"
    ):
        planned_evaluations(Method(mode="weights"))  # type: ignore[arg-type]
    assert get_smoothing("fusion").input_noise and get_smoothing("fusion").weight_noise
    assert get_base_method("integrated_gradients").rows_per_sample(Method(ig_steps=7)) == 7


def _proto_names(enum: typing.Any, prefix: str) -> set[str]:
    return {enum.Name(number)[len(prefix) :].lower() for number in enum.values() if number}


def _cli_choices() -> dict[str, set[str]]:
    parser = argparse.ArgumentParser()
    add_method_arguments(parser)
    return {action.dest: set(action.choices) for action in parser._actions if action.choices is not None}


@pytest.mark.parametrize(
    ("field", "registry", "literal", "enum", "prefix"),
    [
        ("base", base_method_names, BaseMethod, pb.BaseMethod, "BASE_METHOD_"),
        ("mode", smoothing_names, SmoothingMode, pb.SmoothingMode, "SMOOTHING_MODE_"),
        ("sampler", lambda: SAMPLER_NAMES, SamplerName, pb.Sampler, "SAMPLER_"),
    ],
)
def test_proto_cli_and_types_list_what_the_registry_holds(
    field: str,
    registry: typing.Callable[[], tuple[str, ...]],
    literal: typing.Any,
    enum: typing.Any,
    prefix: str,
) -> None:
    names = set(registry())
    assert _proto_names(enum, prefix) == names
    assert _cli_choices()[field] == names
    assert set(typing.get_args(literal)) == names


def test_cli_lists_registered_kernels() -> None:
    assert _cli_choices()["kernel"] == set(KERNEL_NAMES)
