"""Gradient graphs for the repository: built once per (model file and its external data, input,
explained tensor, input shape, builder source) and cached on disk under that content hash.

A cached graph is reused across restarts and reloads; editing the model, its external data files,
its config or the builder changes the hash, so a stale graph is never served. A model with
external data (``model.onnx`` + ``model.onnx.data``, as ``torch.onnx.export`` writes) keeps its
weights on disk while its graph is built, and the cached graph gets its own copy of the data files
(``<hash>.onnx.data``), streamed file to file. Writes are atomic (files built in a temporary folder,
data files renamed into place before the model file), so two servers sharing a cache folder never
read half a graph.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
from functools import lru_cache
from pathlib import Path

import onnx

import models.gradient_graph as gradient_graph
from models.gradient_graph import build_gradient_model, load_model
from models.gradient_graph.external_data import data_files, save_model

__all__ = ["CACHE_FORMAT", "cached_gradient_graph", "graph_key"]

# Bump when the cache layout changes; the builder's own source is hashed separately.
CACHE_FORMAT = "mollify-gradient-graph-1"
_CHUNK_BYTES = 1 << 20


@lru_cache(maxsize=1)
def _builder_fingerprint() -> str:
    """Hash of the builder package's source: a fixed builder means rebuilt graphs."""
    digest = hashlib.sha256()
    package = Path(gradient_graph.__file__).parent
    for path in sorted(package.rglob("*.py")):
        digest.update(path.relative_to(package).as_posix().encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


def _update_with_file(digest: hashlib._Hash, path: Path) -> None:
    with path.open("rb") as handle:
        while chunk := handle.read(_CHUNK_BYTES):
            digest.update(chunk)


def graph_key(
    model_source: bytes | Path,
    input_name: str,
    input_shape: tuple[int, ...],
    explained: str,
    *,
    model: onnx.ModelProto | None = None,
) -> str:
    """The cache key: sha256 over the model, what is differentiated and the builder source.

    Args:
        model_source: the serialized model, or the path of the model file; from a path, every
            external data file it references is hashed too (streamed, never read whole).
        model: the already parsed model (external data not loaded), to skip parsing again.

    Raises:
        models.gradient_graph.InvalidModelError: a referenced external data file is missing or
            lies outside the model's folder.
    """
    digest = hashlib.sha256()
    digest.update(CACHE_FORMAT.encode())
    digest.update(_builder_fingerprint().encode())
    header = json.dumps({"input": input_name, "shape": list(input_shape), "explained": explained}, sort_keys=True)
    digest.update(header.encode())
    if isinstance(model_source, bytes | bytearray):
        digest.update(model_source)
        return digest.hexdigest()
    path = Path(model_source)
    _update_with_file(digest, path)
    proto = model if model is not None else load_model(path, external_data=False)
    for data in data_files(proto, path.parent):
        digest.update(b"\0external data: " + data.relative_to(path.parent).as_posix().encode() + b"\0")
        _update_with_file(digest, data)
    return digest.hexdigest()


def cached_gradient_graph(
    model_source: bytes | Path,
    input_name: str,
    input_shape: tuple[int, ...],
    explained: str,
    cache_dir: Path,
    *,
    model: onnx.ModelProto | None = None,
    rebuild: bool = False,
) -> Path:
    """The path of the gradient graph of ``explained`` with respect to ``input_name``, built if not cached.

    Args:
        model_source: the path of the forward model file (external data files beside it), or its
            serialized bytes (a self-contained model).
        input_name: the graph input to differentiate.
        input_shape: one instance's shape (no batch dimension), pinned in the built graph.
        explained: the tensor whose cotangent the graph takes (any tensor of the graph).
        cache_dir: the cache folder, created if missing.
        model: the already parsed model (from a path: loaded with ``external_data=False``), to
            skip parsing again.
        rebuild: build and replace the cached graph even if one exists (a damaged cache entry).

    Returns:
        ``<cache_dir>/<key>.onnx``; when the graph has external data, ``<key>.onnx.data`` (or
        ``<key>.onnx.<i>.data``) lies beside it.

    Raises:
        models.gradient_graph.GradientGraphError: the model is invalid or has an op on the path
            without a gradient rule.
    """
    folder = None if isinstance(model_source, bytes | bytearray) else Path(model_source).parent
    if model is None:
        model = load_model(model_source) if folder is None else load_model(model_source, external_data=False)
    cache = Path(cache_dir)
    key = graph_key(model_source, input_name, input_shape, explained, model=model)
    path = cache / f"{key}.onnx"
    if path.is_file() and not rebuild:
        return path
    built = build_gradient_model(
        model,
        inputs=[input_name],
        explained=explained,
        input_shapes={input_name: list(input_shape)},
        external_data_dir=folder,
    )
    cache.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".building-", dir=cache))
    try:
        # The model file comes last: once it is in place, its data files are too.
        for written in save_model(built, staging / path.name, external_data_dir=folder):
            written.replace(cache / written.name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return path
