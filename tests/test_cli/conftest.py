"""A real server on a free port, serving the bundled demo models, shared by the CLI tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import free_port


@pytest.fixture(scope="session")
def server_address(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    # Imported here so that the unit tests of this folder never depend on the server importing.
    from service.server import create_server
    from service.settings import Settings

    settings = Settings(
        address="127.0.0.1:0",
        cache_dir=tmp_path_factory.mktemp("graph-cache"),
        log_level="WARNING",
        metrics_port=0,
    )
    server, port = create_server(settings)
    server.start()
    yield f"127.0.0.1:{port}"
    server.stop(grace=0.5).wait(10)


@pytest.fixture
def dead_address() -> str:
    """An address where nothing listens: a port the OS just handed out and took back."""
    return f"127.0.0.1:{free_port()}"


@pytest.fixture
def out_dir(tmp_path: Path) -> Path:
    return tmp_path / "out"
