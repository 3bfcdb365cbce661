"""Shared fixtures of the model tests.

``zoo``: the reference PyTorch architectures and the torch-vs-ONNX comparison of ``zoo_modules.py``,
loaded by path because ``--import-mode=importlib`` gives test folders no importable package.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

_ZOO_MODULE = "mollify_tests_zoo_modules"


@pytest.fixture(scope="session")
def zoo() -> ModuleType:
    if _ZOO_MODULE not in sys.modules:
        spec = importlib.util.spec_from_file_location(_ZOO_MODULE, Path(__file__).with_name("zoo_modules.py"))
        if spec is None or spec.loader is None:
            raise RuntimeError("cannot load tests/test_models/zoo_modules.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[_ZOO_MODULE] = module
        spec.loader.exec_module(module)
    return sys.modules[_ZOO_MODULE]
