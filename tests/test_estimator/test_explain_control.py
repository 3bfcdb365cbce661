"""Cancellation, limits, progress, targets, validation and model failures of ``explain``."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pytest

from estimator import (
    CancelledError,
    ClassTarget,
    CotangentTarget,
    GradientBatch,
    InvalidArgumentError,
    LimitExceededError,
    Method,
    ModelEvaluationError,
    NonFiniteNoisyGradientsError,
    PredictedClassTarget,
    Progress,
    describe,
    explain,
    planned_evaluations,
)
from estimator.testing import LinearModel, ReluShiftModel, TinyMLP

X = np.array([0.3, -0.4, 0.1, 0.8], dtype=np.float32)


def _linear() -> LinearModel:
    return LinearModel(
        np.arange(12, dtype=np.float64).reshape(3, 4) / 10.0 - 0.5, b=np.array([0.0, 5.0, 1.0])
    )


def test_should_stop_cancels_between_chunks() -> None:
    model = ReluShiftModel(0.0, X.shape)
    polls = []

    def stop() -> bool:
        polls.append(model.record.calls)
        return model.record.calls >= 3

    with pytest.raises(CancelledError):
        explain(model, X, Method(samples=100), lower=-1, upper=1, seed=0, chunk_size=10, should_stop=stop)
    assert model.record.calls == 3  # the clean pass and two chunks, then no more work
    assert polls == [0, 1, 2, 3]


def test_max_evaluations_is_checked_before_any_work() -> None:
    model = ReluShiftModel(0.0, X.shape)
    method = Method(base="integrated_gradients", ig_steps=20, samples=10)
    assert planned_evaluations(method) == 201
    with pytest.raises(LimitExceededError, match=r"max_evaluations.*201.*200"):
        explain(model, X, method, lower=-1, upper=1, max_evaluations=200)
    assert model.record.calls == 0
    result = explain(model, X, method, lower=-1, upper=1, max_evaluations=201, seed=0)
    assert result.gradient_evaluations == 201


def test_planned_evaluations_per_mode() -> None:
    assert planned_evaluations(Method(mode="none")) == 2
    assert planned_evaluations(Method(mode="none"), ClassTarget(0)) == 1
    assert planned_evaluations(Method(mode="parameter", weight_draws=7)) == 8
    assert planned_evaluations(Method(mode="fusion", samples=5, weight_draws=3)) == 16
    assert planned_evaluations(Method(samples=5, tol=0.1, max_samples=40)) == 41
    with pytest.raises(InvalidArgumentError, match="method.samples"):
        planned_evaluations(Method(samples=0))


def test_progress_after_every_chunk() -> None:
    seen: list[Progress] = []
    explain(
        ReluShiftModel(0.1, X.shape),
        X,
        Method(samples=25),
        lower=-1,
        upper=1,
        seed=0,
        chunk_size=10,
        on_progress=seen.append,
    )
    assert [p.samples_done for p in seen] == [10, 20, 25]
    assert all(p.samples_planned == 25 for p in seen)
    assert np.isfinite(seen[-1].relative_error) and seen[-1].relative_error > 0


def test_adaptive_stopping_reports_what_it_used() -> None:
    model = TinyMLP(np.random.default_rng(0))
    loose = explain(
        model, X, Method(samples=2, tol=0.2, max_samples=500), ClassTarget(0), lower=-1, upper=1, seed=1
    )
    tight = explain(
        model, X, Method(samples=2, tol=0.02, max_samples=500), ClassTarget(0), lower=-1, upper=1, seed=1
    )
    assert 2 <= loose.samples < tight.samples <= 500
    assert loose.relative_error <= 0.2 and tight.relative_error <= 0.02
    assert tight.extras["stopped_early"]
    capped = explain(
        model, X, Method(samples=2, tol=1e-6, max_samples=30), ClassTarget(0), lower=-1, upper=1, seed=1
    )
    assert capped.samples == 30 and capped.relative_error > 1e-6 and not capped.extras["stopped_early"]


def test_targets_resolve_to_cotangents() -> None:
    model = _linear()
    predicted = explain(model, X, Method(mode="none"), PredictedClassTarget(), lower=-1, upper=1)
    assert predicted.target_index == 1  # bias 5 dominates
    np.testing.assert_array_equal(predicted.cotangent, [0.0, 1.0, 0.0])
    np.testing.assert_allclose(predicted.attribution, model.w[1], rtol=1e-6)
    assert predicted.outputs.shape == (3,) and predicted.gradient_evaluations == 2
    cot = np.array([0.5, 0.0, -2.0])
    explicit = explain(model, X, Method(mode="none"), CotangentTarget(cot), lower=-1, upper=1)
    np.testing.assert_allclose(explicit.attribution, cot @ model.w, rtol=1e-6)
    assert explicit.target_index is None and explicit.gradient_evaluations == 1


@pytest.mark.parametrize(
    ("target", "message"),
    [
        (ClassTarget(3), r"target.index: expected an integer in \[0, 2\]; got 3"),
        (ClassTarget(-1), r"target.index.*got -1"),
        (CotangentTarget(np.ones(4)), r"target.cotangent: expected shape \(3,\).*got \(4,\)"),
        ("class 1", "target: expected"),
    ],
)
def test_bad_targets(target: object, message: str) -> None:
    with pytest.raises(InvalidArgumentError, match=message):
        explain(_linear(), X, Method(mode="none"), target, lower=-1, upper=1)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"x": X[:3]}, r"x: expected shape \(4,\).*got \(3,\)"),
        ({"x": np.array([1, 2, 3, 4])}, "x: expected a float array; got dtype int"),
        ({"x": np.array([0.0, np.nan, 0.0, 0.0])}, "x: expected finite values"),
        ({"lower": 1.0}, "lower: expected lower < upper"),
        ({"lower": -np.inf}, "lower: expected finite values"),
        ({"upper": np.nan}, "upper: expected finite values"),
        ({"lower": np.full(4, 2.0)}, r"lower: expected lower < upper everywhere.*at index \(0,\)"),
        ({"lower": np.zeros(3)}, r"lower: expected a scalar or an array broadcastable to \(4,\)"),
        ({"method": Method(samples=0)}, "method.samples: expected an integer >= 1; got 0"),
        ({"method": Method(alpha=-0.1)}, "method.alpha: expected a number > 0"),
        (
            {"method": Method(confidence=1.5)},
            r"method.confidence: expected a number in the open interval \(0, 1\)",
        ),
        ({"method": Method(kernel="laplace")}, "method.kernel: expected one of gaussian"),
        ({"method": Method(base="saliency")}, "method.base"),  # type: ignore[arg-type]
        ({"method": Method(base="integrated_gradients", ig_steps=0)}, "method.ig_steps"),
        ({"method": Method(base="integrated_gradients", ig_rule="simpson")}, "method.ig_rule"),  # type: ignore[arg-type]
        ({"method": Method(base="integrated_gradients", ig_baseline=np.zeros(3))}, "method.ig_baseline"),
        ({"method": Method(channel_axis=0)}, "method.channel_axis"),
        (
            {"method": Method(channel_axis=1, channel_reduction="sum")},
            r"method.channel_axis: expected an axis in \[-1, 0\]",
        ),
        ({"method": Method(sigma=np.ones(3))}, "method.sigma"),
        ({"method": Method(max_samples=10)}, "method.max_samples"),
        ({"method": Method(tol=0.0)}, "method.tol"),
        ({"seed": -1}, "seed: expected an integer >= 0"),
        ({"seed": 1.5}, "seed: expected an integer"),
        ({"max_evaluations": 0}, "max_evaluations"),
        (
            {"method": Method(scale="adaptive"), "x": np.array([0.0, 2.0, 0.0, 0.0], np.float32)},
            "x: expected values inside",
        ),
    ],
)
def test_invalid_arguments_name_the_field(kwargs: dict, message: str) -> None:
    arguments = {"x": X, "method": Method(samples=4), "lower": -1.0, "upper": 1.0, "seed": 0}
    arguments.update(kwargs)
    model = ReluShiftModel(0.0, X.shape)
    with pytest.raises(InvalidArgumentError, match=message):
        explain(model, arguments.pop("x"), arguments.pop("method"), **arguments)
    assert model.record.calls == 0


class _BrokenModel(ReluShiftModel):
    def __init__(self, failure: str) -> None:
        super().__init__(0.0, X.shape)
        self.failure = failure

    def __call__(
        self,
        inputs: np.ndarray,
        cotangents: np.ndarray,
        weight_overrides: Mapping[str, np.ndarray] | None = None,
    ) -> GradientBatch:
        batch = super().__call__(inputs, cotangents, weight_overrides)
        if self.failure == "raise":
            raise RuntimeError("device lost")
        if self.failure == "shape":
            return GradientBatch(batch.outputs, batch.gradients[:, :2])
        if (self.failure == "nan" and self.record.calls > 1) or self.failure == "nan-clean":
            gradients = batch.gradients.copy()
            gradients[0, 0] = np.nan
            return GradientBatch(batch.outputs, gradients)
        if self.failure == "huge":
            # Finite float64 values whose sum overflows: the quick finiteness test must not refuse them.
            return GradientBatch(batch.outputs, np.full(batch.gradients.shape, 1e308))
        return batch


@pytest.mark.parametrize(
    ("failure", "message"),
    [
        ("raise", "device lost"),
        ("shape", r"model gradients: expected shape \(1, 4\); got \(1, 2\)"),
        ("nan", r"non-finite outputs or gradients for 1 of 4 noisy samples \(25.0%\) .*'gaussian' kernel"),
        ("nan-clean", "model gradients: expected finite values"),
    ],
)
def test_model_failures_are_model_evaluation_errors(failure: str, message: str) -> None:
    with pytest.raises(ModelEvaluationError, match=message):
        explain(_BrokenModel(failure), X, Method(samples=4), lower=-1, upper=1, seed=0)


def test_non_finite_values_at_noisy_samples_name_the_kernel_and_the_remedy() -> None:
    with pytest.raises(NonFiniteNoisyGradientsError, match=r"method.kernel: .*'poisson' kernel.*truncated"):
        explain(_BrokenModel("nan"), X, Method(samples=4, kernel="poisson"), lower=-1, upper=1, seed=0)


@pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning")  # the relative error's norm
def test_huge_finite_gradients_are_not_taken_for_non_finite_ones() -> None:
    result = explain(_BrokenModel("huge"), X, Method(samples=4), lower=-1, upper=1, seed=0)
    np.testing.assert_array_equal(result.attribution, np.full(X.shape, 1e308))


def test_describe_uses_the_papers_names() -> None:
    assert describe(Method(mode="none")) == "Gradient"
    assert describe(Method()) == "SmoothGrad(α=0.2, N=50) × Gradient"
    assert describe(Method(scale="adaptive", base="integrated_gradients", ig_baseline="black")).startswith(
        "AdaptGrad(gaussian, c=0.95, N=50) × IG(gauss_legendre, 50, baseline=black)"
    )
    assert describe(Method(mode="parameter")) == "NoiseGrad(σ_w=0.2, M=10) × Gradient"
    assert "FusionGrad" in describe(Method(mode="fusion")) and "sigmoid" in describe(Method(kernel="sigmoid"))


def test_stochastic_method_with_one_draw_has_unknown_error() -> None:
    result = explain(ReluShiftModel(0.0, X.shape), X, Method(samples=1), lower=-1, upper=1, seed=0)
    assert np.all(np.isnan(result.standard_error)) and result.relative_error == np.inf
