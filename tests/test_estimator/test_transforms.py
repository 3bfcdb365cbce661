"""Output transforms, channel reduction and their standard errors, checked against the per-sample
values the model saw, plus the two smoothed-IG forms (docs/method.md §6, §8)."""

from __future__ import annotations

import numpy as np
import pytest

from estimator import ClassTarget, Method, explain
from estimator.moments import MAX_COVARIANCE_PAIRS
from estimator.testing import QuadraticModel, TinyMLP

SHAPE = (3, 2, 2)  # channel axis 0
X = np.random.default_rng(0).uniform(-0.8, 0.8, SHAPE).astype(np.float32)
N = 40


def _model() -> TinyMLP:
    model = TinyMLP(np.random.default_rng(1), hidden=6, input_shape=SHAPE)
    model.record.keep_inputs = True
    return model


def _per_sample_gradients(model: TinyMLP) -> np.ndarray:
    """Re-evaluate the recorded noisy inputs: the N per-sample gradients, (N, *SHAPE) float64."""
    inputs = np.concatenate(model.record.inputs[1:])
    cot = np.zeros((inputs.shape[0], 3), np.float32)
    cot[:, 1] = 1.0
    return model(inputs, cot).gradients.astype(np.float64)


def _se(values: np.ndarray) -> np.ndarray:
    return values.std(axis=0, ddof=1) / np.sqrt(values.shape[0])


def _expected(g: np.ndarray, transform: str, reduction: str) -> tuple[np.ndarray, np.ndarray]:
    """(θ, SE) from the stored samples: the plug-in estimate and the delta-method influence values."""
    mean = g.mean(axis=0)
    weight = 1.0 / 3.0 if reduction == "mean" else 1.0
    if transform in ("none", "smoothgrad_sq"):
        values = g if transform == "none" else g * g
        if reduction in ("sum", "mean"):
            reduced = weight * values.sum(axis=1)
            return reduced.mean(axis=0), _se(reduced)
        per_channel, influence = values.mean(axis=0), values
    elif transform == "abs":
        per_channel, influence = np.abs(mean), np.sign(mean) * g
    else:
        per_channel = (g * g).mean(axis=0) - mean**2
        influence = g * g - 2.0 * mean * g
    if reduction == "none":
        return per_channel, _se(influence)
    if reduction == "max_abs":
        pick = np.argmax(np.abs(per_channel), axis=0)
        theta = np.take_along_axis(np.abs(per_channel), pick[None], axis=0)[0]
        chosen = np.take_along_axis(influence, pick[None, None].repeat(g.shape[0], axis=0), axis=1)[:, 0]
        return theta, _se(chosen)
    return weight * per_channel.sum(axis=0), _se(weight * influence.sum(axis=1))


@pytest.mark.parametrize("transform", ["none", "abs", "smoothgrad_sq", "vargrad"])
@pytest.mark.parametrize("reduction", ["none", "sum", "mean", "max_abs"])
def test_transform_and_reduction_match_the_stored_samples(transform: str, reduction: str) -> None:
    model = _model()
    method = Method(
        samples=N,
        sigma=0.5,
        transform=transform,
        channel_axis=None if reduction == "none" else 0,
        channel_reduction=reduction,
    )
    result = explain(model, X, method, ClassTarget(1), lower=-1, upper=1, seed=17, chunk_size=13)
    theta, se = _expected(_per_sample_gradients(model), transform, reduction)
    expected_shape = SHAPE if reduction == "none" else SHAPE[1:]
    assert result.attribution.shape == expected_shape == result.standard_error.shape
    # The model returns float32 gradients; the re-evaluation is bit-identical, so only summation
    # order (Welford vs numpy) separates the two.
    np.testing.assert_allclose(result.attribution, theta, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(result.standard_error, se, rtol=1e-7, atol=1e-12)


def test_vargrad_channel_sum_standard_error_is_calibrated() -> None:
    model = TinyMLP(np.random.default_rng(1), hidden=6, input_shape=SHAPE)
    method = Method(samples=60, sigma=0.5, transform="vargrad", channel_axis=0, channel_reduction="sum")
    runs = [explain(model, X, method, ClassTarget(1), lower=-1, upper=1, seed=s) for s in range(250)]
    spread = np.stack([r.attribution for r in runs]).std(axis=0, ddof=1)
    reported = np.stack([r.standard_error for r in runs]).mean(axis=0)
    np.testing.assert_allclose(spread / reported, 1.0, atol=0.2)


def test_many_channels_fall_back_to_within_channel_covariance_and_say_so() -> None:
    channels = 12  # vargrad with sum needs C(2C+1) = 300 co-moment arrays
    assert channels * (2 * channels + 1) > MAX_COVARIANCE_PAIRS
    model = TinyMLP(np.random.default_rng(2), hidden=4, input_shape=(channels, 2))
    x = np.zeros((channels, 2), np.float32)
    method = Method(samples=8, transform="vargrad", channel_axis=0, channel_reduction="sum")
    result = explain(model, x, method, ClassTarget(0), lower=-1, upper=1, seed=0)
    assert "cross-channel" in result.extras["standard_error_note"]
    assert result.attribution.shape == (2,) and np.all(np.isfinite(result.standard_error))
    exact = explain(
        model, x, Method(samples=8, transform="vargrad"), ClassTarget(0), lower=-1, upper=1, seed=0
    )
    np.testing.assert_allclose(result.attribution, exact.attribution.sum(axis=0), rtol=1e-12)


def test_negative_channel_axis_and_output_shape() -> None:
    model = TinyMLP(np.random.default_rng(3), input_shape=(2, 3))
    x = np.zeros((2, 3), np.float32)
    result = explain(
        model,
        x,
        Method(samples=4, channel_axis=-1, channel_reduction="mean"),
        ClassTarget(0),
        lower=-1,
        upper=1,
        seed=0,
    )
    assert result.attribution.shape == (2,)


def test_inner_and_outer_smoothed_ig_reduce_to_ig_without_noise() -> None:
    model = TinyMLP(np.random.default_rng(4))
    x = np.array([0.3, -0.4, 0.1, 0.8], np.float32)
    ig = Method(base="integrated_gradients", mode="none", ig_steps=8, ig_baseline="black")
    plain = explain(model, x, ig, ClassTarget(0), lower=-1, upper=1)
    for smoothing in ("inner", "outer"):
        tiny = Method(
            base="integrated_gradients",
            ig_steps=8,
            ig_baseline="black",
            ig_smoothing=smoothing,
            sigma=1e-12,
            samples=3,
        )
        smooth = explain(model, x, tiny, ClassTarget(0), lower=-1, upper=1, seed=1)
        np.testing.assert_allclose(smooth.attribution, plain.attribution, rtol=1e-6, atol=1e-9)


def test_inner_smoothing_of_a_linear_gradient_keeps_ig_unbiased() -> None:
    rng = np.random.default_rng(5)
    a = rng.standard_normal((3, 3))
    model = QuadraticModel(a @ a.T)
    x = np.array([0.5, -0.3, 0.2], np.float32)
    exact = explain(model, x, Method(base="integrated_gradients", mode="none", ig_steps=4), lower=-2, upper=2)
    smooth = explain(
        model,
        x,
        Method(base="integrated_gradients", ig_steps=4, samples=2000, sigma=0.3),
        lower=-2,
        upper=2,
        seed=3,
    )
    z = np.abs(smooth.attribution - exact.attribution) / smooth.standard_error
    assert np.all(z < 4.0)
    # Inner smoothing evaluates noise around each path point, not around x.
    model.record.keep_inputs = True
    explain(
        model,
        x,
        Method(base="integrated_gradients", ig_steps=4, samples=1, sigma=1e-9),
        lower=-2,
        upper=2,
        seed=0,
    )
    np.testing.assert_allclose(
        model.record.inputs[-1][:, 0], x[0] * (0.5 + 0.5 * np.polynomial.legendre.leggauss(4)[0]), rtol=1e-6
    )


def test_outer_smoothing_shares_one_draw_along_the_path() -> None:
    model = QuadraticModel(np.eye(2))
    model.record.keep_inputs = True
    x = np.array([0.5, -0.5], np.float32)
    explain(
        model,
        x,
        Method(base="integrated_gradients", ig_smoothing="outer", ig_steps=5, samples=1, sigma=0.3),
        lower=-2,
        upper=2,
        seed=8,
    )
    path = model.record.inputs[-1].astype(np.float64)
    alphas = 0.5 * (1 + np.polynomial.legendre.leggauss(5)[0])
    # Baseline zero: every path point is a_k · (x + u) for the same u.
    endpoint = path / alphas[:, None]
    np.testing.assert_allclose(endpoint, np.broadcast_to(endpoint[0], endpoint.shape), rtol=1e-6)
    assert not np.allclose(endpoint[0], x, atol=1e-3)
