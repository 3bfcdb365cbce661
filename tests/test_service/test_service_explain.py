"""End to end over a real channel: every method and mode on the demo models gives exactly what
``estimator.explain`` gives when called directly with the same model, seed and memory budget."""

from __future__ import annotations

from typing import Any

import grpc
import numpy as np
import pytest
from google.protobuf.descriptor_pool import DescriptorPool
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase

from estimator import explain
from estimator.method import ClassTarget, CotangentTarget, Method, PredictedClassTarget, Target
from models.demo.data import breast_cancer_data, digits_data
from service.client import ExplainerClient, ExplainTarget, InstanceExplanation, TopKTarget
from service.server import MollifyServer

SEED = 1234

CASES: list[tuple[str, Method, Any]] = [
    # base methods without noise
    ("digits_cnn", Method(mode="none"), "predicted"),
    ("digits_cnn", Method(mode="none", base="gradient_x_input"), 3),
    ("digits_cnn", Method(mode="none", base="integrated_gradients", ig_steps=8), "predicted"),
    # SmoothGrad / AdaptGrad / truncated, every kernel
    ("digits_cnn", Method(samples=12), "predicted"),
    ("digits_cnn", Method(samples=10, kernel="poisson", alpha=0.1), 5),
    ("digits_cnn", Method(samples=10, kernel="hyperbolic", scale="adaptive"), "predicted"),
    (
        "digits_cnn",
        Method(samples=10, kernel="sigmoid", scale="adaptive", adaptive_rule="two_sided", confidence=0.9),
        "predicted",
    ),
    ("digits_cnn", Method(samples=10, kernel="rect", scale="truncated"), "predicted"),
    ("digits_cnn", Method(samples=10, sigma=0.05), "predicted"),
    ("breast_cancer_mlp", Method(samples=10, sigma=np.linspace(0.05, 0.5, 30, dtype=np.float32)), 1),
    # NoiseGrad and FusionGrad
    ("digits_cnn", Method(mode="parameter", weight_draws=4, weight_sigma=0.1), "predicted"),
    ("digits_cnn", Method(mode="parameter", weight_draws=3, weight_exclude=("*bias*",)), 2),
    ("breast_cancer_mlp", Method(mode="fusion", samples=4, weight_draws=3), "predicted"),
    # gradient × input and integrated gradients with smoothing
    ("digits_cnn", Method(base="gradient_x_input", samples=8, scale="adaptive"), "predicted"),
    (
        "digits_cnn",
        Method(
            base="integrated_gradients",
            samples=4,
            ig_steps=5,
            ig_rule="riemann_trapezoid",
            ig_baseline="white",
        ),
        "predicted",
    ),
    (
        "breast_cancer_mlp",
        Method(
            base="integrated_gradients",
            samples=3,
            ig_steps=4,
            ig_smoothing="outer",
            ig_baseline="black",
            ig_rule="riemann_middle",
        ),
        0,
    ),
    (
        "breast_cancer_mlp",
        Method(
            mode="none", base="integrated_gradients", ig_steps=6, ig_baseline=np.zeros(30, np.float32) + 0.1
        ),
        "predicted",
    ),
    # transforms, channel reduction, adaptive stopping
    ("digits_cnn", Method(samples=10, transform="abs"), "predicted"),
    (
        "digits_cnn",
        Method(samples=10, transform="smoothgrad_sq", channel_axis=0, channel_reduction="sum"),
        "predicted",
    ),
    ("breast_cancer_mlp", Method(samples=10, transform="vargrad"), "predicted"),
    ("breast_cancer_mlp", Method(samples=200, tol=0.5), "predicted"),
    # samplers
    ("digits_cnn", Method(samples=8, sampler="antithetic", scale="adaptive"), "predicted"),
    ("breast_cancer_mlp", Method(samples=12, sampler="latin_hypercube", replicates=3, kernel="rect"), 0),
    (
        "breast_cancer_mlp",
        Method(samples=16, sampler="sobol", replicates=2, base="integrated_gradients", ig_steps=3),
        "predicted",
    ),
    # targets: explicit cotangent, another tensor of the graph
    ("breast_cancer_mlp", Method(samples=6), np.array([1.0, -1.0], np.float32)),
    ("digits_cnn", Method(samples=6), ("output", "probabilities")),
]


def _instances(model: str, count: int) -> np.ndarray:
    if model == "digits_cnn":
        return digits_data().to_input(digits_data().test_pixels[:count])
    data = breast_cancer_data()
    return data.to_input(data.test_features[:count])


def _direct(
    server: MollifyServer, model: str, x: np.ndarray, method: Method, target: Target, output: str = ""
) -> Any:
    entry = server.repository.ready_entry(model)
    session = server.repository.session_for(entry, output)
    return explain(
        session,
        x,
        method,
        target,
        lower=entry.lower,
        upper=entry.upper,
        seed=SEED,
        memory_budget_bytes=server.settings.memory_budget_bytes,
    )


def _assert_same(remote: InstanceExplanation, direct: Any) -> None:
    for name in ("attribution", "standard_error", "outputs", "cotangent"):
        expected = np.asarray(getattr(direct, name), dtype=np.float32)
        assert np.array_equal(getattr(remote, name), expected), name
    assert remote.target_index == direct.target_index
    assert (remote.samples, remote.gradient_evaluations, remote.seed) == (
        direct.samples,
        direct.gradient_evaluations,
        direct.seed,
    )
    assert remote.inherent_noise == direct.inherent_noise
    assert remote.relative_error == direct.relative_error
    assert remote.description == direct.description


@pytest.mark.parametrize(("model", "method", "target"), CASES)
def test_remote_equals_direct(
    client: ExplainerClient, demo_server: MollifyServer, model: str, method: Method, target: Any
) -> None:
    x = _instances(model, 2)
    remote = client.explain(model, x, method=method, target=target, seed=SEED)
    assert [r.instance_index for r in remote] == [0, 1]
    output = target[1] if isinstance(target, tuple) else ""
    direct_target: Target = (
        ClassTarget(target)
        if isinstance(target, int)
        else CotangentTarget(target)
        if isinstance(target, np.ndarray)
        else PredictedClassTarget()
    )
    for i, result in enumerate(remote):
        _assert_same(result, _direct(demo_server, model, x[i], method, direct_target, output))
        assert result.provider == "CPUExecutionProvider"
        assert result.output == (output or "logits")
        assert result.computing_ms > 0 and result.queued_ms >= 0


def test_top_k_explains_the_k_best_classes_in_order(
    client: ExplainerClient, demo_server: MollifyServer
) -> None:
    x = _instances("digits_cnn", 1)
    method = Method(samples=5)
    results = client.explain("digits_cnn", x, method=method, target=("top_k", 3), seed=SEED)
    assert [(r.instance_index, r.rank) for r in results] == [(0, 0), (0, 1), (0, 2)]
    order = np.argsort(-results[0].outputs, kind="stable")[:3]
    assert [r.target_index for r in results] == [int(c) for c in order]
    for result in results:
        _assert_same(
            result, _direct(demo_server, "digits_cnn", x[0], method, ClassTarget(result.target_index or 0))
        )


def test_same_seed_same_numbers_and_unset_seed_is_echoed(client: ExplainerClient) -> None:
    x = _instances("breast_cancer_mlp", 1)
    first = client.explain("breast_cancer_mlp", x, method=Method(samples=8), seed=7)[0]
    again = client.explain("breast_cancer_mlp", x, method=Method(samples=8), seed=7)[0]
    assert np.array_equal(first.attribution, again.attribution)
    chosen = client.explain("breast_cancer_mlp", x, method=Method(samples=8))[0]
    replay = client.explain("breast_cancer_mlp", x, method=Method(samples=8), seed=chosen.seed)[0]
    assert np.array_equal(chosen.attribution, replay.attribution)


def test_bounds_override_changes_the_noise_scale(client: ExplainerClient, demo_server: MollifyServer) -> None:
    x = _instances("digits_cnn", 1)
    method = Method(samples=6)
    remote = client.explain("digits_cnn", x, method=method, seed=SEED, lower=-1.0, upper=2.0)[0]
    direct = explain(
        demo_server.repository.ready_entry("digits_cnn").session,
        x[0],
        method,
        lower=-1.0,
        upper=2.0,
        seed=SEED,
        memory_budget_bytes=demo_server.settings.memory_budget_bytes,
    )
    assert np.array_equal(remote.attribution, direct.attribution.astype(np.float32))


def test_stream_reports_progress_then_the_same_result(client: ExplainerClient) -> None:
    x = _instances("digits_cnn", 2)
    method = Method(samples=40)
    events = list(client.explain_stream("digits_cnn", x, method=method, seed=SEED))
    *progress, final = events
    assert isinstance(final, list) and len(final) == 2
    assert progress and all(p.explanations_total == 2 for p in progress)  # type: ignore[union-attr]
    last = [p for p in progress if p.instance_index == 1]  # type: ignore[union-attr]
    assert last and last[-1].samples_done == last[-1].samples_planned == 40  # type: ignore[union-attr]
    unary = client.explain("digits_cnn", x, method=method, seed=SEED)
    for streamed, direct in zip(final, unary, strict=True):
        assert np.array_equal(streamed.attribution, direct.attribution)


def test_models_are_described(client: ExplainerClient) -> None:
    models = {m.name: m for m in client.list_models()}
    assert set(models) >= {"digits_cnn", "breast_cancer_mlp"}
    digits = client.get_model("digits_cnn")
    assert digits.name == "digits_cnn" and np.array_equal(digits.lower, models["digits_cnn"].lower)
    assert digits.ready and digits.error == ""
    assert (digits.input_name, digits.input_shape, digits.output_name, digits.output_shape) == (
        "input",
        (1, 8, 8),
        "logits",
        (10,),
    )
    assert digits.lower.shape == digits.upper.shape == (1, 8, 8)
    assert digits.labels == [str(i) for i in range(10)]
    assert digits.provider == "CPUExecutionProvider"
    assert digits.preprocessing["kind"] == "image" and digits.preprocessing["size"] == (8, 8)
    assert [t.name for t in digits.graph_outputs] == ["probabilities"]
    assert digits.graph_inputs[0].shape[1:] == (1, 8, 8)
    assert digits.weights  # parameter noise has weights to perturb
    tabular = models["breast_cancer_mlp"]
    assert len(tabular.feature_names) == 30 and tabular.lower.shape == (30,)


def test_health_overall_service_and_models(client: ExplainerClient) -> None:
    assert client.health() == "SERVING"
    assert client.health("mollify.v1.ExplainerService") == "SERVING"
    assert client.health("digits_cnn") == "SERVING"


def test_explain_target_dataclass_combines_output_and_class(client: ExplainerClient) -> None:
    x = _instances("digits_cnn", 1)
    [result] = client.explain(
        "digits_cnn",
        x,
        method=Method(mode="none"),
        target=ExplainTarget(ClassTarget(4), output="probabilities"),
    )
    assert result.target_index == 4 and result.output == "probabilities"
    assert np.isclose(result.outputs.sum(), 1.0, atol=1e-5)  # softmax outputs
    [top] = client.explain("digits_cnn", x, method=Method(mode="none"), target=TopKTarget(1))
    assert top.target_index == int(np.argmax(top.outputs))


def test_reflection_describes_the_services(demo_server: MollifyServer) -> None:
    with grpc.insecure_channel(f"127.0.0.1:{demo_server.port}") as channel:
        database = ProtoReflectionDescriptorDatabase(channel)
        assert {"mollify.v1.ExplainerService", "grpc.health.v1.Health"} <= set(database.get_services())
        service = DescriptorPool(database).FindServiceByName("mollify.v1.ExplainerService")
        assert {m.name for m in service.methods} == {
            "Explain",
            "ExplainStream",
            "ListModels",
            "GetModel",
            "ReloadModels",
        }
