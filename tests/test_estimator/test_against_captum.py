"""Integrated gradients and SmoothGrad agree with Captum on the same torch model (docs/method.md §6)."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pytest

torch = pytest.importorskip("torch")
captum_attr = pytest.importorskip("captum.attr")

from estimator import ClassTarget, GradientBatch, Method, explain  # noqa: E402

RULES = ["riemann_left", "riemann_right", "riemann_middle", "riemann_trapezoid", "gauss_legendre"]


class TorchGradientModel:
    """A torch module seen through the GradientModel contract, differentiated with torch.autograd."""

    def __init__(
        self, module: torch.nn.Module, input_shape: tuple[int, ...], output_shape: tuple[int, ...]
    ) -> None:
        self.module = module
        self.input_shape = input_shape
        self.output_shape = output_shape
        self.bytes_per_sample = 1024
        self.weights: Mapping[str, np.ndarray] = {}
        self.calls = 0

    def __call__(
        self,
        inputs: np.ndarray,
        cotangents: np.ndarray,
        weight_overrides: Mapping[str, np.ndarray] | None = None,
    ) -> GradientBatch:
        self.calls += 1
        x = torch.tensor(inputs, requires_grad=True)
        y = self.module(x)
        (grad,) = torch.autograd.grad(y, x, grad_outputs=torch.tensor(cotangents))
        return GradientBatch(outputs=y.detach().numpy(), gradients=grad.numpy())


@pytest.fixture(scope="module")
def torch_model() -> TorchGradientModel:
    generator = torch.Generator().manual_seed(0)
    module = torch.nn.Sequential(
        torch.nn.Flatten(),
        torch.nn.Linear(12, 16),
        torch.nn.Tanh(),
        torch.nn.Linear(16, 3),
        torch.nn.Softplus(),
    )
    with torch.no_grad():
        for parameter in module.parameters():
            parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.7)
    module.eval()
    return TorchGradientModel(module, (3, 4), (3,))


@pytest.fixture(scope="module")
def instance() -> np.ndarray:
    return np.random.default_rng(5).uniform(-1.0, 1.0, size=(3, 4)).astype(np.float32)


@pytest.mark.parametrize("rule", RULES)
@pytest.mark.parametrize("baseline", ["zero", "black", "white", "array"])
def test_integrated_gradients_match_captum(
    torch_model: TorchGradientModel, instance: np.ndarray, rule: str, baseline: str
) -> None:
    lower = np.array([-1.0, -2.0, -1.5], dtype=np.float32)[:, None]
    upper = np.array([1.0, 1.5, 2.0], dtype=np.float32)[:, None]
    values = {
        "zero": np.zeros((3, 4), np.float32),
        "black": np.broadcast_to(lower, (3, 4)),
        "white": np.broadcast_to(upper, (3, 4)),
        "array": np.full((3, 4), 0.25, np.float32),
    }[baseline]
    chosen = values if baseline == "array" else baseline
    steps = 7 if rule == "riemann_trapezoid" else 9
    ours = explain(
        torch_model,
        instance,
        Method(base="integrated_gradients", mode="none", ig_rule=rule, ig_steps=steps, ig_baseline=chosen),
        ClassTarget(2),
        lower=lower,
        upper=upper,
        chunk_size=4,
    )
    ig = captum_attr.IntegratedGradients(torch_model.module)
    theirs = ig.attribute(
        torch.tensor(instance[None]),
        baselines=torch.tensor(np.ascontiguousarray(values)[None]),
        target=2,
        n_steps=steps,
        method=rule.replace("gauss_legendre", "gausslegendre"),
    )[0].numpy()
    np.testing.assert_allclose(ours.attribution, theirs, rtol=2e-5, atol=2e-6)
    assert ours.gradient_evaluations == steps + 1
    np.testing.assert_array_equal(ours.standard_error, 0.0)


def test_integrated_gradients_are_complete_with_many_steps(
    torch_model: TorchGradientModel, instance: np.ndarray
) -> None:
    ours = explain(
        torch_model,
        instance,
        Method(base="integrated_gradients", mode="none", ig_steps=64),
        ClassTarget(1),
        lower=-1,
        upper=1,
    )
    with torch.no_grad():
        difference = (
            torch_model.module(torch.tensor(instance[None]))[0, 1]
            - torch_model.module(torch.zeros(1, 3, 4))[0, 1]
        )
    assert ours.attribution.sum() == pytest.approx(float(difference), rel=1e-5)


def test_smoothgrad_agrees_with_captum_noise_tunnel(
    torch_model: TorchGradientModel, instance: np.ndarray
) -> None:
    sigma, n = 0.6, 4000
    ours = explain(
        torch_model, instance, Method(sigma=sigma, samples=n), ClassTarget(0), lower=-3, upper=3, seed=12
    )
    tunnel = captum_attr.NoiseTunnel(captum_attr.Saliency(torch_model.module))
    # Captum draws from torch's global generator; fork it so this test leaves no global state behind.
    with torch.random.fork_rng():
        torch.manual_seed(0)
        theirs = tunnel.attribute(
            torch.tensor(instance[None]),
            nt_type="smoothgrad",
            nt_samples=n,
            nt_samples_batch_size=1000,
            stdevs=sigma,
            target=0,
            abs=False,
        )[0].numpy()
    # Two independent estimates with (about) the same standard error.
    z = np.abs(ours.attribution - theirs) / (np.sqrt(2.0) * ours.standard_error)
    assert np.all(z < 4.5), z
    assert np.abs(ours.attribution).max() > 10 * ours.standard_error.max()
