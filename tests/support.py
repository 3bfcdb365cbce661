"""Helpers shared by test modules: waiting on a condition, a free port, loading a standalone script.

Test modules import it as ``tests.support`` (the repository root is on ``sys.path`` under pytest).
Helpers that belong to one folder live there and are imported the same way, e.g.
``from tests.test_models import vjp_harness``.
"""

from __future__ import annotations

import importlib.util
import socket
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[1]


def wait_until(condition: Callable[[], object], timeout: float, what: str, *, interval: float = 0.01) -> None:
    """Poll ``condition()`` every ``interval`` seconds until it is true.

    Raises ``TimeoutError`` naming ``what`` once ``timeout`` seconds have passed without it: the
    stand-in for a fixed sleep, which is either too short on a loaded machine or wastes time.
    """
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"waited {timeout} s for {what}")
        time.sleep(interval)


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now, for the flags that need a number (``--metrics-port``).

    Prefer port 0 where the server reports the port it bound: a pre-picked port may be taken again.
    """
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def load_script(relative_path: str) -> ModuleType:
    """A standalone script of the repository (not part of any package), imported once by its path.

    ``relative_path`` is relative to the repository root, e.g. ``"deploy/gpu/transfer.py"``; the
    module is registered as ``mollify_script_<stem>``.
    """
    path = ROOT / relative_path
    name = f"mollify_script_{path.stem}"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, path)
        if spec is None or spec.loader is None:
            raise ImportError(f"cannot load {relative_path}")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]
