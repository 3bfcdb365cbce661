"""Gradient graphs for the repository: built once per (model file and its external data, input,
explained tensor, input shape, builder source) and cached on disk under that content hash.

A cached graph is reused across restarts and reloads; editing the model, its external data files,
its config or the builder changes the hash, so a stale graph is never served. A model with
external data (``model.onnx`` + ``model.onnx.data``, as ``torch.onnx.export`` writes) keeps its
weights on disk while its graph is built, and the cached graph gets its own copy of the data files
(``<key>.onnx.data``), streamed file to file.

Every cache entry carries a manifest, ``<key>.json``: the key, the cache format, the builder's
source hash, the explained input, its shape and the explained tensor, and the size and sha256 of
each file of the entry. An entry is only served when its manifest matches what is asked for and
every file matches its checksum; anything else (a truncated, empty or random file, a valid graph of
another tensor copied under the key, a missing manifest) is logged and rebuilt in place. Entries
are written atomically: built in a temporary folder, data files renamed into place first, the
model file next and the manifest last, so two servers sharing a cache folder never trust half a
graph. A cache folder that cannot be written (read-only, a path under a regular file, a full disk)
never fails a model: its graph is kept in memory instead, with a warning.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import onnx

import models.gradient_graph as gradient_graph
from models.gradient_graph import build_gradient_model, load_model
from models.gradient_graph.external_data import data_files, has_external_data, save_model

__all__ = [
    "CACHE_FORMAT",
    "GradientGraph",
    "cached_gradient_graph",
    "gradient_graph_for",
    "graph_key",
    "verify_cache_entry",
]

# Bump when the cache layout changes; the builder's own source is hashed separately.
CACHE_FORMAT = "mollify-gradient-graph-2"
_CHUNK_BYTES = 1 << 20
_MANIFEST_SUFFIX = ".json"
_log = logging.getLogger("mollify.service.graphs")


@dataclass(frozen=True)
class GradientGraph:
    """A built gradient graph: a verified file of the cache, or (cache not writable) a model in memory.

    Attributes:
        path: ``<cache>/<key>.onnx``, its data files beside it; ``None`` when kept in memory.
        model: the graph in memory when ``path`` is ``None``.
        external_data_dir: for ``model``: the folder of the external data files it references (the
            forward model's folder); ``None`` when it has none.
    """

    path: Path | None = None
    model: onnx.ModelProto | None = None
    external_data_dir: Path | None = None


@lru_cache(maxsize=1)
def _builder_fingerprint() -> str:
    """Hash of the builder package's source: a fixed builder means rebuilt graphs."""
    digest = hashlib.sha256()
    package = Path(gradient_graph.__file__).parent
    for path in sorted(package.rglob("*.py")):
        digest.update(path.relative_to(package).as_posix().encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


def _update_with_file(digest: Any, path: Path) -> None:
    with path.open("rb") as handle:
        while chunk := handle.read(_CHUNK_BYTES):
            digest.update(chunk)


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    _update_with_file(digest, path)
    return digest.hexdigest()


def graph_key(
    model_source: bytes | Path,
    input_name: str,
    input_shape: tuple[int, ...],
    explained: str,
    *,
    model: onnx.ModelProto | None = None,
    extra_shapes: Mapping[str, tuple[int, ...]] | None = None,
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
    fields: dict[str, Any] = {"input": input_name, "shape": list(input_shape), "explained": explained}
    if extra_shapes:
        fields["extra_shapes"] = {name: list(dims) for name, dims in sorted(extra_shapes.items())}
    header = json.dumps(fields, sort_keys=True)
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


def _entry_header(key: str, input_name: str, input_shape: tuple[int, ...], explained: str) -> dict[str, Any]:
    """What an entry's manifest must record besides its files."""
    return {
        "format": CACHE_FORMAT,
        "key": key,
        "builder": _builder_fingerprint(),
        "input": input_name,
        "input_shape": [int(d) for d in input_shape],
        "explained": explained,
    }


def verify_cache_entry(path: Path, header: dict[str, Any]) -> str | None:
    """Why the cache entry ``path`` (``<key>.onnx``) cannot be served, or ``None`` when it can.

    Args:
        path: the entry's model file; its manifest is ``<key>.json`` beside it.
        header: what the manifest must record (key, format, builder, input, shape, explained tensor).

    Returns:
        ``None`` when the manifest matches ``header`` and every file it lists exists with its size
        and sha256; ``""`` when there is no entry at all; else the first mismatch found.
    """
    manifest = path.with_suffix(_MANIFEST_SUFFIX)
    if not manifest.exists():
        return "" if not path.exists() else "it has no manifest (written by an older version or cut short)"
    try:
        recorded = json.loads(manifest.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as err:
        return f"its manifest cannot be read ({err})"
    if not isinstance(recorded, dict):
        return "its manifest is not a JSON object"
    for name, expected in header.items():
        if recorded.get(name) != expected:
            return f"its manifest records {name} {recorded.get(name)!r}, expected {expected!r}"
    files = recorded.get("files")
    if not isinstance(files, dict) or path.name not in files:
        return f"its manifest does not list {path.name}"
    for name, record in files.items():
        # Only files of this entry, beside the manifest.
        if not isinstance(name, str) or Path(name).name != name or not name.startswith(header["key"]):
            return f"its manifest lists a file outside the entry: {name!r}"
        file = path.with_name(name)
        if not isinstance(record, dict):
            return f"its manifest record of {name} is malformed"
        try:
            size = file.stat().st_size
            if size != record.get("bytes"):
                return f"{name} has {size} bytes, its manifest says {record.get('bytes')}"
            if _file_sha256(file) != record.get("sha256"):
                return f"{name} does not match its sha256 checksum"
        except FileNotFoundError:
            return f"{name} is missing"
        except OSError as err:
            return f"{name} cannot be read ({err})"
    return None


def _write_entry(built: onnx.ModelProto, path: Path, header: dict[str, Any], folder: Path | None) -> None:
    """Write ``built`` as the cache entry ``path`` with its manifest, atomically (see the module docstring).

    Raises:
        OSError: the cache folder cannot be created or written.
    """
    cache = path.parent
    cache.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".building-", dir=cache))
    try:
        written = save_model(built, staging / path.name, external_data_dir=folder)
        files = {w.name: {"bytes": w.stat().st_size, "sha256": _file_sha256(w)} for w in written}
        manifest = staging / path.with_suffix(_MANIFEST_SUFFIX).name
        manifest.write_text(
            json.dumps({**header, "files": files}, sort_keys=True, indent=1), encoding="utf-8"
        )
        # The old manifest goes first: files without their manifest are never trusted, so a reader
        # cannot pair an old manifest with new files (it rebuilds instead).
        (cache / manifest.name).unlink(missing_ok=True)
        # The model file comes last of the graph's files: once it is in place, its data files are too.
        for file in written:
            file.replace(cache / file.name)
        manifest.replace(cache / manifest.name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def gradient_graph_for(
    model_source: bytes | Path,
    input_name: str,
    input_shape: tuple[int, ...],
    explained: str,
    cache_dir: Path,
    *,
    model: onnx.ModelProto | None = None,
    rebuild: bool = False,
    extra_shapes: Mapping[str, tuple[int, ...]] | None = None,
) -> GradientGraph:
    """The gradient graph of ``explained`` with respect to ``input_name``: the verified cache entry,
    else built and cached, else (the cache cannot be written) built and kept in memory.

    Args:
        model_source: the path of the forward model file (external data files beside it), or its
            serialized bytes (a self-contained model).
        input_name: the graph input to differentiate.
        input_shape: one instance's shape (no batch dimension), pinned in the built graph.
        explained: the tensor whose cotangent the graph takes (any tensor of the graph).
        cache_dir: the cache folder, created if missing.
        model: the already parsed model (from a path: loaded with ``external_data=False``), to
            skip parsing again.
        rebuild: build and replace the cached graph even if its entry verifies.
        extra_shapes: one instance's shape of other graph inputs to pin (fed, not differentiated).

    Returns:
        The graph; from the cache, ``<cache_dir>/<key>.onnx`` (data files ``<key>.onnx.data`` or
        ``<key>.onnx.<i>.data`` beside it, manifest ``<key>.json``).

    Raises:
        models.gradient_graph.GradientGraphError: the model is invalid or has an op on the path
            without a gradient rule.
    """
    folder = None if isinstance(model_source, bytes | bytearray) else Path(model_source).parent
    if model is None:
        model = load_model(model_source) if folder is None else load_model(model_source, external_data=False)
    key = graph_key(model_source, input_name, input_shape, explained, model=model, extra_shapes=extra_shapes)
    pins = {
        input_name: list(input_shape),
        **{name: list(dims) for name, dims in (extra_shapes or {}).items()},
    }
    path = Path(cache_dir) / f"{key}.onnx"
    header = _entry_header(key, input_name, input_shape, explained)
    reason = "a rebuild was asked for" if rebuild else verify_cache_entry(path, header)
    if reason is None:
        return GradientGraph(path=path)
    if reason:
        _log.warning(
            "rebuilding a cached gradient graph that cannot be served",
            extra={"path": str(path), "reason": reason, "explained": explained},
        )
    built = build_gradient_model(
        model,
        inputs=[input_name],
        explained=explained,
        input_shapes=pins,
        external_data_dir=folder,
    )
    references_files = has_external_data(built)
    try:
        _write_entry(built, path, header, folder)
    except OSError as err:
        _log.warning(
            "the gradient-graph cache cannot be written; the graph is kept in memory and built again at "
            "the next start (fix the folder's permissions or choose another --cache-dir)",
            extra={"path": str(cache_dir), "error": str(err), "explained": explained},
        )
        if has_external_data(built) and not references_files:
            # A graph too large to stay inline was moved to a data file of the failed write: build again.
            built = build_gradient_model(
                model, inputs=[input_name], explained=explained, input_shapes=pins, external_data_dir=folder
            )
        return GradientGraph(model=built, external_data_dir=folder if references_files else None)
    return GradientGraph(path=path)


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
    """Like :func:`gradient_graph_for`, but always a file of the cache.

    Raises:
        OSError: the cache folder cannot be written.
        models.gradient_graph.GradientGraphError: as :func:`gradient_graph_for`.
    """
    graph = gradient_graph_for(
        model_source, input_name, input_shape, explained, cache_dir, model=model, rebuild=rebuild
    )
    if graph.path is None:
        raise OSError(f"the gradient-graph cache {cache_dir} cannot be written")
    return graph.path
