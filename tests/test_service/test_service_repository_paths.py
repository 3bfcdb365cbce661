"""What the repository reads and what it tells clients about files: errors name files relative to
the repository (never an absolute repository or cache path), and symbolic links resolving outside
the repository are refused unless --allow-symlinks-outside, while links inside it are followed."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import onnx
import pytest

from service.client import ExplainerClient, MollifyError
from service.repository import ModelRepository
from service.server import MollifyServer
from service.settings import Settings

X = np.full((1, 4), 0.25, np.float32)


def _external_data_model(folder: Path, model: onnx.ModelProto) -> None:
    """``model.onnx`` + ``model.onnx.data``, as ``torch.onnx.export`` writes them."""
    folder.mkdir(parents=True, exist_ok=True)
    stored = onnx.ModelProto()
    stored.CopyFrom(model)
    onnx.save_model(
        stored,
        str(folder / "model.onnx"),
        save_as_external_data=True,
        all_tensors_to_one_file=True,
        location="model.onnx.data",
        size_threshold=0,
    )


# ---------------------------------------------------------------------------------- paths (6)


@pytest.fixture()
def broken_server(tmp_path: Path, helpers: SimpleNamespace) -> Iterator[MollifyServer]:
    root = tmp_path / "models"
    helpers.write_model(root, "good")
    helpers.write_model(root, "truncated", model=helpers.linear_model().SerializeToString()[:60])
    folder = helpers.write_model(root, "no_data")
    _external_data_model(folder, helpers.linear_model())
    (folder / "model.onnx.data").unlink()
    settings = Settings(
        address="127.0.0.1:0",
        model_repository=root,
        cache_dir=tmp_path / "cache",
        device="cpu",
        intra_op_threads=1,
    )
    server = helpers.start_server(settings)
    yield server
    server.stop(0).wait()


def test_load_errors_sent_to_clients_name_files_relative_to_the_repository(
    broken_server: MollifyServer, tmp_path: Path
) -> None:
    absolute = {str(tmp_path), str(tmp_path.resolve()), str(broken_server.repository.root)}
    with ExplainerClient(f"127.0.0.1:{broken_server.port}", timeout=30) as client:
        listed = {m.name: m.error for m in client.list_models()}
        fetched = {name: client.get_model(name).error for name in ("truncated", "no_data")}
        refused = {}
        for name in ("truncated", "no_data"):
            with pytest.raises(MollifyError) as caught:
                client.explain(name, X)
            assert caught.value.code == "FAILED_PRECONDITION"
            refused[name] = caught.value.message
    for texts in (listed, fetched, refused):
        assert "'truncated/model.onnx'" in texts["truncated"], texts
        assert "model.onnx.data" in texts["no_data"] and "'no_data'" in texts["no_data"], texts
        for text in texts.values():
            assert not any(path in text for path in absolute), text
    # The log keeps the absolute path for the operator.
    assert str(broken_server.repository.root) in _load_error_logged(broken_server.repository, "truncated")


def _load_error_logged(repository: ModelRepository, name: str) -> str:
    import logging

    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append  # type: ignore[method-assign]
    logger = logging.getLogger("mollify.service.repository")
    logger.addHandler(handler)
    try:
        folder = repository.root / name
        (folder / "model.onnx").write_bytes(
            (folder / "model.onnx").read_bytes() + b"\x00"
        )  # changed: loads again
        repository.reload()
    finally:
        logger.removeHandler(handler)
    return " ".join(str(getattr(r, "error", "")) for r in records)


def test_cache_paths_are_shown_relative_to_the_cache(tmp_path: Path, helpers: SimpleNamespace) -> None:
    cache = tmp_path / "cache"
    repository = ModelRepository(tmp_path / "models", cache, session_factory=helpers.slow_factory(0.0))
    text = f"cannot open {cache}/abc.onnx in {cache} for {tmp_path / 'models'}/m/model.onnx"
    assert repository.client_text(text) == "cannot open <cache>/abc.onnx in <cache> for m/model.onnx"


# ---------------------------------------------------------------------------------- symlinks (7)


@pytest.fixture()
def linked_repository(tmp_path: Path, helpers: SimpleNamespace) -> Path:
    """Models whose folder, model.onnx or config.json link outside the repository, or inside it."""
    outside = tmp_path / "outside"
    helpers.write_model(outside, "elsewhere")
    secret = outside / "secret.json"
    secret.write_text('{"password": "hunter2"}')
    root = tmp_path / "models"
    helpers.write_model(root, "real")
    model_link = helpers.write_model(root, "model_link")
    (model_link / "model.onnx").unlink()
    os.symlink(outside / "elsewhere" / "model.onnx", model_link / "model.onnx")
    config_link = helpers.write_model(root, "config_link")
    (config_link / "config.json").unlink()
    os.symlink(secret, config_link / "config.json")
    config_outside = helpers.write_model(root, "config_outside")
    (config_outside / "config.json").unlink()
    os.symlink(outside / "elsewhere" / "config.json", config_outside / "config.json")
    os.symlink(outside / "elsewhere", root / "folder_link", target_is_directory=True)
    inside = helpers.write_model(root, "inside_link")
    (inside / "model.onnx").unlink()
    os.symlink(Path("..") / "real" / "model.onnx", inside / "model.onnx")  # relative, inside the repository
    os.symlink(root / "real", root / "folder_inside", target_is_directory=True)
    data_link = helpers.write_model(root, "data_link")
    _external_data_model(outside / "data", helpers.linear_model())
    (data_link / "model.onnx").write_bytes((outside / "data" / "model.onnx").read_bytes())
    os.symlink(outside / "data" / "model.onnx.data", data_link / "model.onnx.data")
    fifo = helpers.write_model(root, "fifo_config")
    (fifo / "config.json").unlink()
    os.mkfifo(fifo / "config.json")  # reading it would block the reload forever
    return root


OUTSIDE = ("model_link", "config_link", "config_outside", "folder_link")


def _repository(root: Path, tmp_path: Path, helpers: SimpleNamespace, **kwargs: bool) -> ModelRepository:
    repository = ModelRepository(
        root, tmp_path / "cache", session_factory=helpers.slow_factory(0.0), **kwargs
    )
    repository.reload()
    return repository


def test_symlinks_outside_the_repository_are_refused_by_default(
    linked_repository: Path, tmp_path: Path, helpers: SimpleNamespace
) -> None:
    repository = _repository(linked_repository, tmp_path, helpers)
    infos = {m.name: m for m in repository.list_models()}
    for name in ("real", "inside_link", "folder_inside"):
        assert infos[name].ready, (name, infos[name].error)
    for name in OUTSIDE:
        error = infos[name].error
        assert not infos[name].ready, name
        assert "symbolic link resolving outside the repository" in error, error
        assert "--allow-symlinks-outside / MOLLIFY_ALLOW_SYMLINKS_OUTSIDE" in error, error
        assert str(tmp_path) not in error and "hunter2" not in error and "password" not in error, error
    assert "resolves outside the model's folder" in infos["data_link"].error
    assert (
        not infos["fifo_config"].ready
        and "fifo_config/config.json is not a regular file" in infos["fifo_config"].error
    )


def test_symlinks_outside_are_followed_when_allowed(
    linked_repository: Path, tmp_path: Path, helpers: SimpleNamespace
) -> None:
    repository = _repository(linked_repository, tmp_path, helpers, allow_symlinks_outside=True)
    infos = {m.name: m for m in repository.list_models()}
    for name in ("real", "inside_link", "folder_inside", "model_link", "config_outside", "folder_link"):
        assert infos[name].ready, (name, infos[name].error)
    # Followed, but a file that is not a model config is still only an invalid config; its content is not echoed.
    assert not infos["config_link"].ready and "hunter2" not in infos["config_link"].error
    # External data files always lie in their model's folder.
    assert not infos["data_link"].ready and "resolves outside the model's folder" in infos["data_link"].error
    assert not infos["fifo_config"].ready


def test_the_symlink_setting_reaches_the_repository(
    linked_repository: Path, tmp_path: Path, helpers: SimpleNamespace
) -> None:
    settings = Settings.from_sources(
        {"address": "127.0.0.1:0", "model_repository": linked_repository, "cache_dir": tmp_path / "cache"},
        {"MOLLIFY_ALLOW_SYMLINKS_OUTSIDE": "true"},
    )
    assert settings.allow_symlinks_outside
    server = helpers.start_server(settings, session_factory=helpers.slow_factory(0.0))
    try:
        with ExplainerClient(f"127.0.0.1:{server.port}", timeout=30) as client:
            assert client.get_model("model_link").ready and client.health("model_link") == "SERVING"
    finally:
        server.stop(0).wait()
    assert not Settings(address="127.0.0.1:0").allow_symlinks_outside
