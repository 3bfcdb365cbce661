"""A server on another runtime: ``create_server(settings, backend=...)`` runs every graph of every
model on that backend (the configured tensor, other tensors a request names, explained inputs a
request names: prefix and suffix), served over loopback gRPC and compared with the ONNX Runtime
server the settings configure by default.

The backend is onnx's pure-Python reference evaluator (:mod:`tests.test_models.reference_backend`).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from estimator.method import ClassTarget, Method
from models.runtime import CPU_PROVIDER
from service.client import ExplainerClient
from service.core import MollifyCore
from service.server import create_server
from service.settings import Settings
from service.vocabulary import ExplainTarget, InstanceExplanation
from tests.test_models.reference_backend import ReferenceBackend

X = np.array([[0.3, -0.6, 0.1, 0.8], [-0.2, 0.5, -0.9, 0.4]], dtype=np.float32)
SMOOTHGRAD = Method(samples=16, alpha=0.2)


def _settings(root: Path, cache: Path) -> Settings:
    return Settings(
        address="127.0.0.1:0",
        model_repository=root,
        cache_dir=cache,
        device="cpu",
        intra_op_threads=1,
        max_concurrent_requests=1,
    )


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, helpers: SimpleNamespace) -> Iterator[SimpleNamespace]:
    """The same repository behind an ONNX Runtime server (the default) and a reference-backend one."""
    root = tmp_path_factory.mktemp("models")
    helpers.write_model(root, "linear")
    backend = ReferenceBackend()
    cache = tmp_path_factory.mktemp("cache")
    default = helpers.start_server(_settings(root, cache))
    reference = helpers.start_server(_settings(root, cache), backend=backend)
    try:
        with (
            ExplainerClient(f"127.0.0.1:{default.port}", timeout=120) as ort_client,
            ExplainerClient(f"127.0.0.1:{reference.port}", timeout=120) as reference_client,
        ):
            yield SimpleNamespace(ort=ort_client, reference=reference_client, backend=backend)
    finally:
        reference.stop(0).wait()
        default.stop(0).wait()


def _assert_same(got: list[InstanceExplanation], expected: list[InstanceExplanation]) -> None:
    assert len(got) == len(expected)
    for mine, theirs in zip(got, expected, strict=True):
        assert (mine.target_index, mine.samples, mine.seed) == (
            theirs.target_index,
            theirs.samples,
            theirs.seed,
        )
        np.testing.assert_allclose(mine.attribution, theirs.attribution, rtol=1e-4, atol=1e-6)
        np.testing.assert_allclose(mine.outputs, theirs.outputs, rtol=1e-5, atol=1e-6)
        assert np.abs(theirs.attribution).max() > 1e-3  # a real attribution on both sides


def test_get_model_reports_the_backends_provider(served: SimpleNamespace) -> None:
    info = served.reference.get_model("linear")
    assert info.ready, info.error
    assert info.provider == "onnx.reference"
    assert [model.provider for model in served.reference.list_models()] == ["onnx.reference"]
    assert served.ort.get_model("linear").provider == CPU_PROVIDER


@pytest.mark.parametrize(
    "method",
    [
        SMOOTHGRAD,
        Method(mode="parameter", weight_draws=4, weight_sigma=0.2),
        Method(base="integrated_gradients", mode="none", ig_steps=8),
    ],
    ids=["smoothgrad", "noisegrad", "integrated-gradients"],
)
def test_attributions_equal_the_onnx_runtime_servers(served: SimpleNamespace, method: Method) -> None:
    runs_before = sum(model.runs for model in served.backend.opened)
    expected = served.ort.explain("linear", X, method=method, target="predicted", seed=7)
    got = served.reference.explain("linear", X, method=method, target="predicted", seed=7)
    _assert_same(got, expected)
    assert sum(model.runs for model in served.backend.opened) > runs_before  # it ran on the backend


def test_other_tensors_and_explained_inputs_a_request_names_run_on_the_backend(
    served: SimpleNamespace,
) -> None:
    opened_before = len(served.backend.opened)
    other = ExplainTarget(selection=ClassTarget(1), output="probabilities")
    _assert_same(
        served.reference.explain("linear", X, method=SMOOTHGRAD, target=other, seed=3),
        served.ort.explain("linear", X, method=SMOOTHGRAD, target=other, seed=3),
    )
    after_output = len(served.backend.opened)
    assert after_output > opened_before  # the gradient graph of "probabilities" opened there
    # At the inner tensor "hidden" = tanh(x): a cut model, its prefix run forward on the backend too.
    at_hidden = {
        "target": ClassTarget(2),
        "seed": 5,
        "lower": -1.0,
        "upper": 1.0,
        "explained_input": "hidden",
    }
    _assert_same(
        served.reference.explain("linear", X, method=SMOOTHGRAD, **at_hidden),
        served.ort.explain("linear", X, method=SMOOTHGRAD, **at_hidden),
    )
    assert len(served.backend.opened) >= after_output + 2  # prefix and suffix gradient graph


def test_a_backend_with_a_session_factory_is_refused(tmp_path: Path, helpers: SimpleNamespace) -> None:
    helpers.write_model(tmp_path / "models", "linear")
    settings = _settings(tmp_path / "models", tmp_path / "cache")
    with pytest.raises(ValueError, match="a session_factory or a backend, not both"):
        create_server(settings, backend=ReferenceBackend(), session_factory=helpers.slow_factory(0.0))


def test_the_default_backend_is_onnx_runtime_as_the_settings_say(tmp_path: Path) -> None:
    from models.runtime import OrtBackend

    settings = Settings(
        model_repository=tmp_path, cache_dir=tmp_path / "cache", device="cpu", intra_op_threads=3
    )
    backend = MollifyCore(settings).repository.backend
    assert isinstance(backend, OrtBackend)
    assert (backend.device, backend.intra_op_threads) == ("cpu", 3)
    assert backend.options == settings.runtime_options()
