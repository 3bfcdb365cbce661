"""The shared test helpers of ``tests/support.py``, and that no other file loads modules by path."""

from __future__ import annotations

import threading
import time

import pytest

from tests.support import ROOT, load_script, wait_until


def test_wait_until_returns_once_the_condition_holds() -> None:
    ready = threading.Event()
    threading.Timer(0.05, ready.set).start()
    wait_until(ready.is_set, 10, "the timer")
    assert ready.is_set()


def test_wait_until_names_what_it_waited_for() -> None:
    started = time.monotonic()
    with pytest.raises(TimeoutError, match=r"waited 0\.05 s for the impossible"):
        wait_until(lambda: False, 0.05, "the impossible")
    assert time.monotonic() - started >= 0.05


def test_load_script_imports_a_script_once() -> None:
    transfer = load_script("deploy/gpu/transfer.py")
    assert transfer is load_script("deploy/gpu/transfer.py")
    assert callable(transfer.split)


def test_only_the_support_module_loads_files_by_path() -> None:
    offenders = [
        str(path.relative_to(ROOT))
        for folder in ("tests", "benchmarks")
        for path in sorted((ROOT / folder).rglob("*.py"))
        if path != ROOT / "tests/support.py"
        and path != ROOT / "tests/test_support.py"
        and "spec_from_file_location" in path.read_text()
    ]
    assert offenders == [], f"import these as modules (tests.support.load_script for scripts): {offenders}"
