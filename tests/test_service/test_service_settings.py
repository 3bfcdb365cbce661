"""service.settings: one frozen object from flags and MOLLIFY_* variables; flags win; bad values
name the flag and the variable."""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

import pytest

from service.errors import SettingsError
from service.settings import Settings, add_arguments, parse_size


def _parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return parser.parse_args(argv)


def test_defaults_are_safe() -> None:
    settings = Settings.from_sources(_parse([]), environ={"HOME": "/home/u"})
    assert settings.address == "127.0.0.1:50051"  # loopback unless asked
    assert settings.token is None and settings.tls_cert is None
    assert settings.metrics_port == 0
    assert settings.cache_dir == Path("/home/u/.cache/mollify/gradient-graphs")
    assert Settings.from_sources(_parse([]), environ={"XDG_CACHE_HOME": "/c"}).cache_dir == Path(
        "/c/mollify/gradient-graphs"
    )
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.address = "0.0.0.0:1"  # type: ignore[misc]


def test_flags_win_over_environment_which_wins_over_defaults(tmp_path: Path) -> None:
    env = {
        "MOLLIFY_ADDRESS": "127.0.0.1:7000",
        "MOLLIFY_MAX_INSTANCES": "5",
        "MOLLIFY_MEMORY_BUDGET_BYTES": "2MiB",
        "MOLLIFY_REFLECTION": "false",
        "MOLLIFY_CACHE_DIR": str(tmp_path),
    }
    settings = Settings.from_sources(
        _parse(["--address", "127.0.0.1:0", "--max-queued-requests", "3"]), environ=env
    )
    assert settings.address == "127.0.0.1:0"
    assert settings.max_instances == 5
    assert settings.max_queued_requests == 3
    assert settings.memory_budget_bytes == 2 << 20
    assert settings.reflection is False
    assert settings.cache_dir == tmp_path
    assert Settings.from_sources(_parse(["--reflection"]), environ=env).reflection is True


def test_token_file(tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("s3cret\n")
    settings = Settings.from_sources(_parse(["--token-file", str(token_file)]), environ={})
    assert settings.token == "s3cret"
    assert "s3cret" not in repr(settings)


@pytest.mark.parametrize(
    ("argv", "env", "message"),
    [
        (["--address", "localhost"], {}, "--address / MOLLIFY_ADDRESS must be host:port"),
        ([], {"MOLLIFY_MAX_INSTANCES": "many"}, "MOLLIFY_MAX_INSTANCES (or --max-instances)"),
        (
            ["--max-concurrent-requests", "0"],
            {},
            "--max-concurrent-requests / MOLLIFY_MAX_CONCURRENT_REQUESTS must be at least 1",
        ),
        ([], {"MOLLIFY_DEVICE": "tpu"}, "--device / MOLLIFY_DEVICE must be one of"),
        (["--tls-cert", "/nonexistent.pem"], {}, "given together with --tls-key"),
        ([], {"MOLLIFY_MEMORY_BUDGET_BYTES": "12 parsecs"}, "byte count"),
        (
            ["--model-repository", "/nonexistent/models"],
            {},
            "--model-repository / MOLLIFY_MODEL_REPOSITORY must be an existing folder",
        ),
    ],
)
def test_bad_values_name_flag_and_variable(argv: list[str], env: dict[str, str], message: str) -> None:
    with pytest.raises(SettingsError) as caught:
        Settings.from_sources(_parse(argv), environ=env)
    assert message in str(caught.value)


def test_parse_size() -> None:
    assert parse_size("1024") == 1024
    assert parse_size("64MiB") == 64 << 20
    assert parse_size("1g") == 1 << 30
    with pytest.raises(ValueError):
        parse_size("-5")


def test_threads_and_concurrency_share_the_cores(monkeypatch: pytest.MonkeyPatch) -> None:
    import service.settings as module

    monkeypatch.setattr(module, "available_cores", lambda: 16)
    assert module.default_concurrency() == 4
    assert Settings(max_concurrent_requests=4).session_threads() == 4
    assert Settings(max_concurrent_requests=3, intra_op_threads=7).session_threads() == 7
    monkeypatch.setattr(module, "available_cores", lambda: 2)
    assert module.default_concurrency() == 1
    assert Settings(max_concurrent_requests=1).session_threads() == 2
    assert Settings(max_concurrent_requests=8).session_threads() == 1
