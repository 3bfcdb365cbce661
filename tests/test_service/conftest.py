"""Fixtures of the service tests, composed settings → repository → server → channel → client.

Servers bind port 0 and are reached over real channels. The demo-model server is shared by the
whole session (building the gradient graphs once); tests that need slow or special models build
their own small repository with :func:`write_model` and a fake :data:`SessionFactory`.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from estimator.gradient_model import GradientBatch
from models.config import ModelConfig
from models.demo import repository_path
from service.client import ExplainerClient
from service.server import MollifyServer, create_server
from service.settings import Settings

DEMO_MODELS = ("digits_cnn", "breast_cancer_mlp")


def linear_model(features: int = 4, classes: int = 3, seed: int = 0) -> onnx.ModelProto:
    """``probabilities = Softmax(tanh(x) @ W + b)``; ``logits`` is an intermediate tensor."""
    rng = np.random.default_rng(seed)
    graph = helper.make_graph(
        [
            helper.make_node("Tanh", ["x"], ["hidden"]),
            helper.make_node("Gemm", ["hidden", "W", "b"], ["logits"]),
            helper.make_node("Softmax", ["logits"], ["probabilities"], axis=-1),
        ],
        "linear_softmax",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", features])],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["batch", classes])],
        [
            numpy_helper.from_array(rng.normal(size=(features, classes)).astype(np.float32), "W"),
            numpy_helper.from_array(rng.normal(size=(classes,)).astype(np.float32), "b"),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 10
    return model


def write_model(root: Path, name: str, model: onnx.ModelProto | bytes | None = None, **config: Any) -> Path:
    """Write ``root/name/{model.onnx,config.json}``; ``config`` overrides the linear model's config."""
    folder = root / name
    folder.mkdir(parents=True, exist_ok=True)
    model = linear_model() if model is None else model
    (folder / "model.onnx").write_bytes(model if isinstance(model, bytes) else model.SerializeToString())
    values: dict[str, Any] = {
        "name": name,
        "input_name": "x",
        "input_shape": [4],
        "explained_tensor": "logits",
        "lower": -1.0,
        "upper": 1.0,
        "labels": ["a", "b", "c"],
    }
    values.update(config)
    ModelConfig.from_dict(values).save(folder)
    return folder


class SlowLinearModel:
    """A GradientModel ``y = x @ W.T`` that sleeps ``delay_s`` per call, for load and deadline tests.

    ``bytes_per_sample`` is large so that a small memory budget gives one sample per call.
    """

    provider = "FakeExecutionProvider"

    def __init__(self, features: int = 4, classes: int = 3, delay_s: float = 0.01) -> None:
        self._w = np.arange(features * classes, dtype=np.float32).reshape(classes, features) / 10
        self.delay_s = delay_s
        self.calls = 0

    @property
    def input_shape(self) -> tuple[int, ...]:
        return (self._w.shape[1],)

    @property
    def output_shape(self) -> tuple[int, ...]:
        return (self._w.shape[0],)

    @property
    def bytes_per_sample(self) -> int:
        return 1 << 20

    @property
    def weights(self) -> Mapping[str, np.ndarray]:
        return {}

    def __call__(
        self,
        inputs: np.ndarray,
        cotangents: np.ndarray,
        weight_overrides: Mapping[str, np.ndarray] | None = None,
    ) -> GradientBatch:
        self.calls += 1
        time.sleep(self.delay_s)
        return GradientBatch(outputs=inputs @ self._w.T, gradients=cotangents @ self._w)


def slow_factory(delay_s: float) -> Any:
    def factory(model_bytes: bytes, model: onnx.ModelProto, config: ModelConfig) -> SlowLinearModel:
        return SlowLinearModel(delay_s=delay_s)

    return factory


def start_server(settings: Settings, **kwargs: Any) -> MollifyServer:
    server, _port = create_server(settings, **kwargs)
    server.start()
    return server


@pytest.fixture(scope="session")
def helpers() -> SimpleNamespace:
    """The helpers above, for test modules (``--import-mode=importlib`` cannot import conftest)."""
    return SimpleNamespace(
        linear_model=linear_model,
        write_model=write_model,
        SlowLinearModel=SlowLinearModel,
        slow_factory=slow_factory,
        start_server=start_server,
    )


@pytest.fixture(scope="session")
def graph_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("graph-cache")


@pytest.fixture(scope="session")
def demo_repository(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A private copy of the bundled demo models (tests may not touch the package's folder)."""
    root = tmp_path_factory.mktemp("demo-repository")
    for name in DEMO_MODELS:
        shutil.copytree(repository_path() / name, root / name)
    return root


@pytest.fixture(scope="session")
def demo_settings(demo_repository: Path, graph_cache: Path) -> Settings:
    return Settings(
        address="127.0.0.1:0",
        model_repository=demo_repository,
        cache_dir=graph_cache,
        device="cpu",
        intra_op_threads=1,
        memory_budget_bytes=8 << 20,
        max_concurrent_requests=2,
        max_queued_requests=8,
        max_message_bytes=4 << 20,
        max_evaluations=20_000,
    )


@pytest.fixture(scope="session")
def demo_server(demo_settings: Settings) -> Iterator[MollifyServer]:
    server = start_server(demo_settings)
    yield server
    server.stop(0).wait()


@pytest.fixture(scope="session")
def client(demo_server: MollifyServer) -> Iterator[ExplainerClient]:
    with ExplainerClient(f"127.0.0.1:{demo_server.port}", timeout=60) as c:
        yield c
