"""The gradient-graph cache cannot lie: every entry is verified against its manifest before it is
served, anything that does not match (a truncated, empty or random file, a data file of the right
size but other bytes, a valid graph of another tensor copied under the key, with or without its
manifest) is logged and rebuilt, and a cache folder that cannot be written never fails a model."""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import onnx
import pytest

import service.graphs
from models.runtime import OrtBackend
from service.graphs import gradient_graph_for
from service.repository import ModelRepository

X = np.array([[0.3, -0.2, 0.7, 0.1]], np.float32)
COTANGENT = np.array([[1.0, -2.0, 0.5]], np.float32)


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def messages(self) -> list[str]:
        return [
            f"{r.getMessage()} {getattr(r, 'reason', '')} {getattr(r, 'error', '')}" for r in self.records
        ]


@pytest.fixture()
def graph_log() -> Iterator[_Records]:
    """Records of ``mollify.service.graphs``, whatever the ``mollify`` logger's propagation."""
    handler = _Records()
    logger = logging.getLogger("mollify.service.graphs")
    logger.addHandler(handler)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)


def _expected_gradient(model: onnx.ModelProto) -> np.ndarray:
    """J^T·cotangent of ``logits = tanh(x) @ W + b`` (the configured explained tensor)."""
    weights = onnx.numpy_helper.to_array(next(t for t in model.graph.initializer if t.name == "W"))
    return (1 - np.tanh(X) ** 2) * (COTANGENT @ weights.T)


def _assert_correct(repository: ModelRepository, model: onnx.ModelProto) -> None:
    entry = repository.entry("good")
    assert entry.info.ready, entry.info.error
    assert entry.session is not None
    result = entry.session(X, COTANGENT)
    np.testing.assert_allclose(result.gradients, _expected_gradient(model), rtol=1e-5, atol=1e-6)


def _repository(root: Path, cache: Path) -> ModelRepository:
    repository = ModelRepository(root, cache, backend=OrtBackend(device="cpu", intra_op_threads=1))
    repository.reload()
    return repository


def _the_entry(cache: Path) -> Path:
    [graph] = sorted(cache.glob("*.onnx"))
    return graph


def _damage(kind: str, graph: Path, root: Path, tmp_path: Path) -> None:
    manifest = graph.with_suffix(".json")
    if kind == "truncated":
        graph.write_bytes(graph.read_bytes()[: graph.stat().st_size // 2])
    elif kind == "empty":
        graph.write_bytes(b"")
    elif kind == "random":
        graph.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    elif kind == "data file of the same size, other bytes":
        data = graph.with_name(graph.name + ".data")
        weights = np.frombuffer(data.read_bytes(), np.float32)
        data.write_bytes((weights * -3.0).tobytes())
    elif kind in ("graph of another tensor", "graph of another tensor with its manifest"):
        # A valid graph of the same model explaining the probabilities (same shape as the logits).
        other = gradient_graph_for(
            root / "good" / "model.onnx", "x", (4,), "probabilities", tmp_path / "other"
        )
        assert other.path is not None
        shutil.copyfile(other.path, graph)
        if kind.endswith("manifest"):
            shutil.copyfile(other.path.with_suffix(".json"), manifest)
    elif kind == "no manifest":
        manifest.unlink()
    else:
        raise AssertionError(kind)


DAMAGES = [
    "truncated",
    "empty",
    "random",
    "data file of the same size, other bytes",
    "graph of another tensor",
    "graph of another tensor with its manifest",
    "no manifest",
]


@pytest.mark.parametrize("kind", DAMAGES)
def test_a_damaged_cache_entry_is_logged_and_rebuilt_never_served(
    kind: str, tmp_path: Path, helpers: SimpleNamespace, graph_log: _Records, monkeypatch: pytest.MonkeyPatch
) -> None:
    root, cache = tmp_path / "models", tmp_path / "cache"
    model = helpers.linear_model(seed=3)
    if kind.startswith("data file"):
        # The path of models over 2 GB, forced here: the cached graph keeps its weights in a data file.
        import models.gradient_graph.external_data as external_data

        monkeypatch.setattr(external_data, "INLINE_LIMIT_BYTES", 256)
        monkeypatch.setattr(external_data, "_TENSOR_THRESHOLD_BYTES", 16)
    helpers.write_model(root, "good", model=model)
    _assert_correct(_repository(root, cache), model)
    graph = _the_entry(cache)
    _damage(kind, graph, root, tmp_path)
    graph_log.records.clear()

    again = _repository(root, cache)  # a restart over the damaged cache
    _assert_correct(again, model)
    assert any("rebuilding a cached gradient graph" in m for m in graph_log.messages()), graph_log.messages()
    # The entry was repaired on disk: the next start serves it without building.
    graph_log.records.clear()
    monkeypatch.setattr(service.graphs, "build_gradient_model", _refuse_to_build)
    _assert_correct(_repository(root, cache), model)
    assert graph_log.records == []


def _refuse_to_build(*args: object, **kwargs: object) -> None:
    raise AssertionError("a verified cache entry was rebuilt")


def _cache_under_a_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    return blocker / "cache"


def _read_only_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    cache = tmp_path / "read-only"
    cache.mkdir()
    cache.chmod(0o555)
    if os.access(cache, os.W_OK):  # root ignores the mode bits: refuse writes as the kernel would

        def refuse(*args: object, **kwargs: object) -> str:
            raise PermissionError(13, "Permission denied", str(cache))

        monkeypatch.setattr(service.graphs.tempfile, "mkdtemp", refuse)
    return cache


@pytest.mark.parametrize(
    "make_cache", [_cache_under_a_file, _read_only_cache], ids=["under a file", "read-only"]
)
def test_a_cache_that_cannot_be_written_falls_back_to_graphs_in_memory(
    make_cache: object,
    tmp_path: Path,
    helpers: SimpleNamespace,
    graph_log: _Records,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    root = tmp_path / "models"
    model = helpers.linear_model(seed=4)
    helpers.write_model(root, "good", model=model)
    cache = make_cache(tmp_path, monkeypatch)  # type: ignore[operator]
    try:
        repository = _repository(root, cache)
        _assert_correct(repository, model)
        assert any("cache cannot be written" in m for m in graph_log.messages()), graph_log.messages()
        # Other explained tensors are built the same way.
        entry = repository.ready_entry("good")
        hidden = repository.session_for(entry, "hidden")
        assert hidden.output_shape == (4,)
    finally:
        if cache.is_dir():
            cache.chmod(0o755)


def test_a_graph_in_memory_keeps_external_weights_in_their_files(
    tmp_path: Path, helpers: SimpleNamespace, graph_log: _Records
) -> None:
    """A model with external data and an unwritable cache: the in-memory graph reads the weights
    from the model's own data file."""
    root = tmp_path / "models"
    model = helpers.linear_model(seed=6)
    folder = root / "good"
    folder.mkdir(parents=True)
    stored = onnx.ModelProto()
    stored.CopyFrom(model)  # onnx moves the values of the model it saves to the data file
    onnx.save_model(
        stored,
        str(folder / "model.onnx"),
        save_as_external_data=True,
        all_tensors_to_one_file=True,
        location="model.onnx.data",
        size_threshold=0,
    )
    helpers.write_model(root, "good", model=onnx.load(str(folder / "model.onnx"), load_external_data=False))
    assert (folder / "model.onnx.data").is_file()
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    _assert_correct(_repository(root, blocker / "cache"), model)
    assert any("cache cannot be written" in m for m in graph_log.messages())
