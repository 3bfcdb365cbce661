"""The gRPC explanation service, its model repository, settings and the CLI client.

The public names below are imported on first use, so that ``import service.cli`` (every
``mollify`` command) does not pay for grpc, onnxruntime and the server.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = [
    "ExplainProgress",
    "ExplainTarget",
    "ExplainerClient",
    "InstanceExplanation",
    "ModelInfo",
    "MollifyError",
    "MollifyServer",
    "Settings",
    "TopKTarget",
    "create_server",
]

_HOMES = {
    "ExplainProgress": "service.vocabulary",
    "ExplainTarget": "service.vocabulary",
    "ExplainerClient": "service.client",
    "InstanceExplanation": "service.vocabulary",
    "ModelInfo": "service.vocabulary",
    "MollifyError": "service.client",
    "MollifyServer": "service.server",
    "Settings": "service.settings",
    "TopKTarget": "service.vocabulary",
    "create_server": "service.server",
}


def __getattr__(name: str) -> Any:
    if name not in _HOMES:
        raise AttributeError(f"module 'service' has no attribute {name!r}")
    return getattr(importlib.import_module(_HOMES[name]), name)
