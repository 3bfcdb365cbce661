"""Shared fixtures of the model tests.

``zoo``: the reference PyTorch architectures and the torch-vs-ONNX comparison of ``zoo_modules.py``.
"""

from __future__ import annotations

from types import ModuleType

import pytest


@pytest.fixture(scope="session")
def zoo() -> ModuleType:
    from tests.test_models import zoo_modules  # torch, imported only by the tests that use the zoo

    return zoo_modules
