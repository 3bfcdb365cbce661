"""Gradient graphs for the repository: built once per (model file, input, explained tensor, input
shape, builder source) and cached on disk under that content hash.

A cached graph is reused across restarts and reloads; editing the model, its config or the builder
changes the hash, so a stale graph is never served. Writes are atomic (temp file + rename), so
two servers sharing a cache folder never read half a file.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from functools import lru_cache
from pathlib import Path

import onnx

import models.gradient_graph as gradient_graph
from models.gradient_graph import build_gradient_model, load_model

__all__ = ["CACHE_FORMAT", "cached_gradient_graph", "graph_key"]

# Bump when the cache layout changes; the builder's own source is hashed separately.
CACHE_FORMAT = "mollify-gradient-graph-1"


@lru_cache(maxsize=1)
def _builder_fingerprint() -> str:
    """Hash of the builder package's source: a fixed builder means rebuilt graphs."""
    digest = hashlib.sha256()
    package = Path(gradient_graph.__file__).parent
    for path in sorted(package.rglob("*.py")):
        digest.update(path.relative_to(package).as_posix().encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


def graph_key(model_bytes: bytes, input_name: str, input_shape: tuple[int, ...], explained: str) -> str:
    """The cache key: sha256 over the model bytes, what is differentiated and the builder source."""
    digest = hashlib.sha256()
    digest.update(CACHE_FORMAT.encode())
    digest.update(_builder_fingerprint().encode())
    header = json.dumps({"input": input_name, "shape": list(input_shape), "explained": explained}, sort_keys=True)
    digest.update(header.encode())
    digest.update(model_bytes)
    return digest.hexdigest()


def cached_gradient_graph(
    model_bytes: bytes,
    input_name: str,
    input_shape: tuple[int, ...],
    explained: str,
    cache_dir: Path,
    *,
    model: onnx.ModelProto | None = None,
) -> Path:
    """The path of the gradient graph of ``explained`` with respect to ``input_name``, built if not cached.

    Args:
        model_bytes: the serialized forward model (``model.onnx``'s content).
        input_name: the graph input to differentiate.
        input_shape: one instance's shape (no batch dimension), pinned in the built graph.
        explained: the tensor whose cotangent the graph takes (any tensor of the graph).
        cache_dir: the cache folder, created if missing.
        model: the already parsed ``model_bytes``, to skip parsing again.

    Raises:
        models.gradient_graph.GradientGraphError: the model is invalid or has an op on the path
            without a gradient rule.
    """
    path = Path(cache_dir) / f"{graph_key(model_bytes, input_name, input_shape, explained)}.onnx"
    if path.is_file():
        return path
    source = model if model is not None else load_model(model_bytes)
    built = build_gradient_model(
        source, inputs=[input_name], explained=explained, input_shapes={input_name: list(input_shape)}
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temporary = tempfile.mkstemp(prefix=".building-", suffix=".onnx", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(built.SerializeToString())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return path
