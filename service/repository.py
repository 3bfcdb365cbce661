"""The model repository: a folder with one sub-folder per model (``model.onnx`` + ``config.json``,
plus the external data files ``model.onnx`` references, e.g. ``model.onnx.data``).

Gradient graphs are built at load (``service/graphs.py``, cached on disk by content hash and
verified before use) and run by one :class:`models.runtime.GradientSession` per model and
explained tensor, on the repository's backend (``models.runtime.backend.Backend``: ONNX Runtime
unless the server was given another). A model that fails to load (corrupt ONNX, bad config, an op without a gradient
rule, ...) never stops the server: it is listed as not ready with its error.

:meth:`ModelRepository.reload` rescans without a restart (concurrent requests share one reload, at
most one per ``reload_min_interval_s``); requests in flight keep the sessions they started with. A
model whose changed files fail to load (a copy still being written, a broken export) keeps serving
its last good version: its info then says ``stale`` and carries the ``candidate_error``, and the
files are tried again at the next reload where they changed.

Model names are folder names matching ``[A-Za-z0-9_.-]+`` (not only dots); a name from a request is
only ever looked up in memory. Symbolic links (a model folder, ``model.onnx``, ``config.json``)
may point anywhere inside the repository; one resolving outside it is refused unless
``allow_symlinks_outside`` (external data files must always lie in their model's folder). Errors
sent to clients name files relative to the repository (the log keeps absolute paths).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import re
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

import numpy as np
import onnx

from estimator.gradient_model import GradientModel
from models.config import CONFIG_FILE_NAME, MODEL_FILE_NAME, TOKENIZER_FILE_NAME, ModelConfig
from models.cut import candidate_listing
from models.gradient_graph import GradientGraphError, InvalidModelError, load_model
from models.gradient_graph.external_data import data_locations, resolve_data_file
from models.instance_session import InstanceSession
from service.errors import InvalidRequestError, ModelNotReadyError, UnknownModelError
from service.graphs import GradientGraph, gradient_graph_for
from service.instance_models import needs_instance_session, open_instance_session
from service.layouts import load_config
from service.layouts import scan as scan_layouts
from service.reloads import ReloadGate
from service.vocabulary import ModelInfo, ReloadResult, TensorDescription

if TYPE_CHECKING:
    from models.runtime.backend import Backend

__all__ = ["ModelEntry", "ModelRepository", "ServedModel", "SessionFactory", "validate_model_name"]

_log = logging.getLogger("mollify.service.repository")
_NAME = re.compile(r"[A-Za-z0-9_.-]+")
_ONNX_DTYPES: dict[int, str] = {
    onnx.TensorProto.FLOAT: "float32",
    onnx.TensorProto.DOUBLE: "float64",
    onnx.TensorProto.FLOAT16: "float16",
    onnx.TensorProto.INT32: "int32",
    onnx.TensorProto.INT64: "int64",
    onnx.TensorProto.UINT8: "uint8",
    onnx.TensorProto.BOOL: "bool",
}


class ServedModel(GradientModel, Protocol):
    """A gradient model that also reports the execution provider it runs on."""

    @property
    def provider(self) -> str: ...


SessionFactory = Callable[[Path, onnx.ModelProto, ModelConfig], ServedModel]
"""Turns a forward model (the path of ``model.onnx``, its external data files beside it, and the
parsed proto, external data not loaded) and its config into a served gradient model of
``config.explained_tensor``. The default builds (or finds in the cache) the gradient graph and
opens a ``models.runtime.GradientSession`` on it, run by the repository's backend; tests inject
fakes (a fake replaces the runtime altogether: no backend then)."""

TensorSessionFactory = Callable[[Path, onnx.ModelProto, ModelConfig], ServedModel]
"""Like :data:`SessionFactory` for an explained input a request names (``config.explained_input``;
the config's own bounds and channel reduction cleared): bounds it cannot derive are left unknown
(``InstanceSession.bounds_known``) instead of failing, since the request then sends them."""

_SYMLINK_SETTING = "--allow-symlinks-outside / MOLLIFY_ALLOW_SYMLINKS_OUTSIDE"


def validate_model_name(name: str, field_name: str = "model_name") -> str:
    """Return ``name`` if it is a valid model name, else raise :class:`InvalidRequestError`."""
    if not _NAME.fullmatch(name) or set(name) == {"."}:
        raise InvalidRequestError(
            f"{field_name} must match [A-Za-z0-9_.-]+ and not be only dots, got {name!r}"
        )
    return name


# Refusals of explained inputs (and candidate listings) remembered per model version.
_REFUSALS_KEPT = 64

_Key = TypeVar("_Key")
_Value = TypeVar("_Value")


def _recall(cache: OrderedDict[_Key, _Value], key: _Key) -> _Value | None:
    """The cached value of ``key`` (now the most recently used), or ``None``."""
    value = cache.get(key)
    if value is not None:
        cache.move_to_end(key)
    return value


def _remember(cache: OrderedDict[_Key, _Value], key: _Key, value: _Value, limit: int) -> _Value:
    """Cache ``value`` under ``key``, dropping the least recently used beyond ``limit``."""
    cache[key] = value
    while len(cache) > limit:
        cache.popitem(last=False)
    return value


# The files of a model folder the server reads (tokenizer.json only when present).
_MODEL_FILES = (MODEL_FILE_NAME, CONFIG_FILE_NAME, TOKENIZER_FILE_NAME)
# A tokenizer travels in GetModel responses (model lists leave it out): larger ones are refused.
MAX_TOKENIZER_BYTES = 8 << 20


def _fingerprint(folder: Path) -> str:
    """Hash of everything a model is loaded from: ``model.onnx``, ``config.json``, ``tokenizer.json``
    (when present) and the external data files ``model.onnx`` references (streamed), so a reload
    notices a change to any of them."""
    digest = hashlib.sha256()
    model_bytes = b""
    for file_name in _MODEL_FILES:
        path = folder / file_name
        if file_name == TOKENIZER_FILE_NAME and not path.exists():
            continue
        digest.update(file_name.encode())
        content = path.read_bytes() if path.is_file() else b"<missing>"
        digest.update(content)
        if file_name == MODEL_FILE_NAME:
            model_bytes = content
    for location, data in _external_data_files(folder, model_bytes):
        digest.update(b"\0external data: " + location.encode() + b"\0")
        if data is None:
            digest.update(b"<missing or outside the folder>")
            continue
        with data.open("rb") as handle:
            digest.update(hashlib.file_digest(handle, "sha256").digest())
    return digest.hexdigest()


def _external_data_files(folder: Path, model_bytes: bytes) -> list[tuple[str, Path | None]]:
    """Each external data location of the model and its file (``None`` when it cannot be used)."""
    model = onnx.ModelProto()
    try:
        model.ParseFromString(model_bytes)
    except Exception:  # noqa: BLE001 - an unparsable model has no data files; loading reports the error
        return []
    found: list[tuple[str, Path | None]] = []
    for location in data_locations(model):
        try:
            found.append((location, resolve_data_file(folder, location, "")))
        except GradientGraphError:
            found.append((location, None))
    return found


def _describe(value: onnx.ValueInfoProto) -> TensorDescription:
    tensor_type = value.type.tensor_type
    shape = tuple(d.dim_value if d.HasField("dim_value") else -1 for d in tensor_type.shape.dim)
    return TensorDescription(value.name, shape, _ONNX_DTYPES.get(tensor_type.elem_type, "other"))


@dataclass
class ModelEntry:
    """One model of the repository, loaded or not. Replaced as a whole on reload, never mutated
    except for its cache of extra gradient graphs.

    ``fingerprint`` hashes the files the served version was loaded from; ``candidate_fingerprint``
    the newer files that failed to load while that version keeps serving (``""``: none).
    """

    name: str
    folder: Path
    fingerprint: str
    info: ModelInfo
    config: ModelConfig | None = None
    session: ServedModel | None = None
    tensor_names: frozenset[str] = frozenset()
    candidate_fingerprint: str = ""
    _extra: OrderedDict[str, ServedModel] = field(default_factory=OrderedDict)
    # Graphs of explained inputs requests named, by (explained tensor, explained input).
    _inputs: OrderedDict[tuple[str, str], ServedModel] = field(default_factory=OrderedDict)
    # Refusals of explained inputs, by (explained tensor, explained input), and the candidate
    # listing per explained tensor: a request repeating a bad name, or naming no tensor of the
    # graph, is answered without reading or hashing the model's files again.
    _refusals: OrderedDict[tuple[str, str], str] = field(default_factory=OrderedDict)
    _candidates: OrderedDict[str, str] = field(default_factory=OrderedDict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def lower(self) -> np.ndarray:
        return self.info.lower

    @property
    def upper(self) -> np.ndarray:
        return self.info.upper


class ModelRepository:
    """Loads, lists and reloads the models of one folder.

    Args:
        root: the repository folder.
        cache_dir: the gradient-graph cache folder.
        backend: runs every graph the default session factories open (a
            ``models.runtime.backend.Backend``); default: ``models.runtime.OrtBackend()`` (CUDA where
            it really loads, else CPU; the server passes the one its settings configure,
            :func:`service.core.default_backend`).
        session_factory: see :data:`SessionFactory`; default: the cached gradient graph in a
            ``models.runtime.GradientSession`` on ``backend``. Excludes ``backend``.
        max_output_graphs: gradient graphs kept per model for tensors other than the configured one
            (least recently used dropped first).
        max_explained_inputs: gradient graphs kept per model (per loaded version) for explained
            inputs requests name, least recently used dropped first.
        tensor_session_factory: see :data:`TensorSessionFactory`; default: the runtime's when
            ``session_factory`` is not given, else none (requests naming an explained input are
            then refused).
        on_change: called with every model's info after each load or reload (health updates).
        allow_symlinks_outside: follow symbolic links (model folders, ``model.onnx``,
            ``config.json``) that resolve outside ``root``; by default such a model is refused.
        reload_min_interval_s: least seconds between the starts of two reloads (see
            :class:`service.reloads.ReloadGate`).
        model_name: the name of the model when ``root`` is a single model's folder (KServe).
        inferred_bounds: input bounds of models whose config is inferred from the graph.
    """

    def __init__(
        self,
        root: Path,
        cache_dir: Path,
        *,
        backend: Backend | None = None,
        session_factory: SessionFactory | None = None,
        max_output_graphs: int = 4,
        max_explained_inputs: int = 4,
        tensor_session_factory: TensorSessionFactory | None = None,
        on_change: Callable[[list[ModelInfo]], None] | None = None,
        allow_symlinks_outside: bool = False,
        reload_min_interval_s: float = 0.0,
        model_name: str | None = None,
        inferred_bounds: tuple[float, float] = (0.0, 1.0),
    ) -> None:
        self.root = Path(root).resolve()
        self._model_name = model_name
        self._inferred_bounds = inferred_bounds
        self._layouts: dict[str, str] = {}
        self.cache_dir = Path(cache_dir)
        self.backend = _repository_backend(backend, session_factory)
        self._factory = session_factory or _runtime_factory(self.cache_dir, self.backend)
        self._max_output_graphs = max_output_graphs
        self._max_explained_inputs = max_explained_inputs
        self._tensor_factory = tensor_session_factory
        if tensor_session_factory is None and session_factory is None:
            self._tensor_factory = _runtime_factory(self.cache_dir, self.backend, require_bounds=False)
        self._on_change = on_change
        self._allow_symlinks_outside = allow_symlinks_outside
        self._entries: dict[str, ModelEntry] = {}
        self._lock = threading.Lock()
        self._gate: ReloadGate[ReloadResult] = ReloadGate(self._reload_now, reload_min_interval_s)
        # Absolute prefixes that errors sent to clients must not carry, longest first.
        prefixes = {
            str(Path(root).absolute()): "",
            str(self.root): "",
            str(self.cache_dir.absolute()): "<cache>/",
        }
        prefixes.setdefault(str(self.cache_dir.resolve()), "<cache>/")
        self._prefixes = sorted(prefixes.items(), key=lambda item: -len(item[0]))

    # ------------------------------------------------------------------------ queries

    def list_models(self) -> list[ModelInfo]:
        """Every model, as lists carry them: without tokenizer texts (:meth:`entry` has them)."""
        with self._lock:
            return [self._entries[name].info.listed() for name in sorted(self._entries)]

    def entry(self, name: str) -> ModelEntry:
        """The model named ``name``, ready or not.

        Raises:
            InvalidRequestError: the name is not a valid model name.
            UnknownModelError: no such model.
        """
        validate_model_name(name)
        with self._lock:
            entry = self._entries.get(name)
            known = sorted(self._entries)
        if entry is None:
            raise UnknownModelError(f"model_name {name!r} is not in the repository; known models: {known}")
        return entry

    def ready_entry(self, name: str) -> ModelEntry:
        """Like :meth:`entry`, raising :class:`ModelNotReadyError` (with the load error) if not ready."""
        entry = self.entry(name)
        if entry.session is None:
            raise ModelNotReadyError(f"model {name!r} is not ready: {entry.info.error}")
        return entry

    def client_text(self, text: str) -> str:
        """``text`` with the repository's and the cache's absolute paths made relative: files of the
        repository as ``<model>/model.onnx``, cache files as ``<cache>/<key>.onnx``."""
        for prefix, shown in self._prefixes:
            if prefix in ("", os.sep):
                continue
            text = text.replace(prefix + os.sep, shown)
            text = text.replace(prefix, shown.rstrip("/") or "the repository")
        return text

    def session_for(self, entry: ModelEntry, output: str, explained_input: str = "") -> ServedModel:
        """The gradient model explaining ``output`` (``""``: the configured tensor) with respect to
        ``explained_input`` (``""``: the configured one), built on first use.

        Raises:
            InvalidRequestError: ``output`` is not a tensor of the model or cannot be differentiated;
                ``explained_input`` does not exist, is not float or not upstream of ``output`` (the
                message lists candidates), or the suffix after it cannot be differentiated.
        """
        if entry.session is None or entry.config is None:
            raise ModelNotReadyError(f"model {entry.name!r} is not ready: {entry.info.error}")
        configured = (
            entry.info.explained_input.name if entry.info.explained_input else entry.config.input_name
        )
        if explained_input not in ("", configured):
            return self._session_at(entry, output or entry.config.explained_tensor, explained_input)
        if output in ("", entry.config.explained_tensor):
            return entry.session
        self._check_output(entry, output)
        with entry._lock:
            session = _recall(entry._extra, output)
            if session is None:
                session = _remember(
                    entry._extra, output, self._open_extra(entry, output), self._max_output_graphs
                )
            return session

    @staticmethod
    def _check_output(entry: ModelEntry, output: str) -> None:
        if entry.config is not None and output not in entry.tensor_names:
            outputs = [t.name for t in entry.info.graph_outputs]
            raise InvalidRequestError(
                f"target.output {output!r} is not a tensor of model {entry.name!r}; its outputs are "
                f"{outputs}, its configured explained tensor {entry.config.explained_tensor!r}"
            )

    def _session_at(self, entry: ModelEntry, output: str, tensor: str) -> ServedModel:
        """The cached (least recently used dropped) gradient model of ``output`` at ``tensor``."""
        assert entry.config is not None
        if output != entry.config.explained_tensor:
            self._check_output(entry, output)
        key = (output, tensor)
        with entry._lock:
            session = _recall(entry._inputs, key)
            if session is not None:
                return session
            refusal = entry._refusals.get(key)
            if refusal is None and tensor not in entry.tensor_names:
                refusal = (
                    f"explained_input {tensor!r} is not a tensor of the graph; "
                    f"{self._candidates(entry, output)} (model {entry.name!r})"
                )
            if refusal is not None:
                raise InvalidRequestError(refusal)
            try:
                session = self._open_at(entry, output, tensor)
            except InvalidRequestError as err:
                _remember(entry._refusals, key, str(err), _REFUSALS_KEPT)
                raise
            return _remember(entry._inputs, key, session, self._max_explained_inputs)

    def _candidates(self, entry: ModelEntry, output: str) -> str:
        """The candidate tensors for explained inputs of ``output`` (models.cut's listing), kept per
        explained tensor; the caller holds ``entry._lock``."""
        listing = entry._candidates.get(output)
        if listing is None:
            model = load_model(entry.folder / MODEL_FILE_NAME, external_data=False)
            listing = _remember(entry._candidates, output, candidate_listing(model, output), _REFUSALS_KEPT)
        return listing

    def _check_current(self, entry: ModelEntry, what: str) -> None:
        """Refuse to open more graphs of a model whose served version is not what is on disk."""
        assert entry.config is not None
        if entry.info.stale:
            raise ModelNotReadyError(
                f"model {entry.name!r} serves its last good version while its changed files fail to load "
                f"({entry.info.candidate_error}); only its configured {what} can be explained until fixed "
                "files are reloaded"
            )
        if _fingerprint(entry.folder) != entry.fingerprint:
            raise ModelNotReadyError(
                f"model {entry.name!r} changed on disk since it was loaded; reload the repository first"
            )

    def _open_at(self, entry: ModelEntry, output: str, tensor: str) -> ServedModel:
        assert entry.config is not None
        if self._tensor_factory is None:
            raise InvalidRequestError(
                f"explained_input: model {entry.name!r} is served by a session factory that explains only "
                "its configured input; leave explained_input empty"
            )
        configured = (
            entry.info.explained_input.name if entry.info.explained_input else entry.config.input_name
        )
        self._check_current(entry, f"explained input {configured!r}")
        config = entry.config
        config = dataclasses.replace(
            config,
            explained_tensor=output,
            explained_input=tensor,
            explained_lower=None,
            explained_upper=None,
            channel_axis=None,
            channel_reduction="",
            baseline_token_id=config.baseline_token_id if tensor != config.input_name else None,
        )
        model_path = entry.folder / MODEL_FILE_NAME
        try:
            return self._tensor_factory(model_path, load_model(model_path, external_data=False), config)
        except InvalidModelError as err:
            # models.cut's refusals name explained_input and list candidate tensors.
            raise InvalidRequestError(f"{self.client_text(str(err))} (model {entry.name!r})") from err
        except GradientGraphError as err:
            raise InvalidRequestError(
                f"explained_input {tensor!r} of model {entry.name!r}: the graph after it cannot be "
                f"differentiated: {self.client_text(str(err))}"
            ) from err

    def _open_extra(self, entry: ModelEntry, output: str) -> ServedModel:
        if entry.config is None:
            raise ModelNotReadyError(f"model {entry.name!r} is not ready: {entry.info.error}")
        self._check_current(entry, f"tensor {entry.config.explained_tensor!r}")
        model_path = entry.folder / MODEL_FILE_NAME
        try:
            config = dataclasses.replace(entry.config, explained_tensor=output)
            return self._factory(model_path, load_model(model_path, external_data=False), config)
        except GradientGraphError as err:
            raise InvalidRequestError(
                f"target.output {output!r} of model {entry.name!r} cannot be differentiated: "
                f"{self.client_text(str(err))}"
            ) from err

    # ------------------------------------------------------------------------ loading

    def reload(self, *, may_refuse: bool = True) -> ReloadResult:
        """Rescan the folder: load new models, reload changed ones (by content), drop removed ones.

        Unchanged models keep their sessions; a ready model whose changed files fail to load keeps
        serving the version it had (see the module docstring). Safe to call from any thread:
        concurrent calls share one reload that starts after they were made, at most one per
        ``reload_min_interval_s``.

        Args:
            may_refuse: whether to refuse when too many reload requests are already waiting.

        Raises:
            service.errors.OverloadedError: too many reload requests are waiting (``may_refuse``).
        """
        return self._gate.request(may_refuse=may_refuse)

    def _reload_now(self) -> ReloadResult:
        found = self._scan()
        with self._lock:
            old = dict(self._entries)
        added: list[str] = []
        reloaded: list[str] = []
        kept: dict[str, ModelEntry] = {}
        for name, folder in found.items():
            previous = old.get(name)
            refusal = self._policy_refusal(name, folder)
            if refusal is not None:
                fingerprint = f"refused: {refusal}"
            else:
                try:
                    fingerprint = _fingerprint(folder)
                except OSError as err:
                    fingerprint = f"unreadable: {err}"
            if previous is not None and previous.folder == folder:
                if fingerprint == previous.fingerprint:
                    kept[name] = _served_again(previous) if previous.candidate_fingerprint else previous
                    continue
                if fingerprint == previous.candidate_fingerprint:
                    kept[name] = previous  # the same failed files: not tried again
                    continue
            serving = previous is not None and previous.session is not None
            candidate = self._load(name, folder, fingerprint, refusal, serving=serving)
            if candidate.session is None and previous is not None and serving:
                kept[name] = _keep_serving(previous, candidate)
                continue
            kept[name] = candidate
            (reloaded if previous is not None else added).append(name)
        removed = sorted(set(old) - set(found))
        with self._lock:
            self._entries = kept
        models = self.list_models()
        for name in removed:
            _log.info("model removed", extra={"model": name})
        if self._on_change is not None:
            self._on_change(models)
        return ReloadResult(models=models, added=sorted(added), reloaded=sorted(reloaded), removed=removed)

    def _policy_refusal(self, name: str, folder: Path) -> str | None:
        """Why ``folder`` (or its ``model.onnx``, ``config.json`` or ``tokenizer.json``) may not be read
        under the symlink policy, or ``None``. Checked before any of its files is read; a file that
        is not a regular file (a FIFO, a device) is never read either."""
        for file_name in _MODEL_FILES:
            path = folder / file_name
            if path.exists() and not path.is_file():
                return f"{name}/{file_name} is not a regular file"
        if self._allow_symlinks_outside:
            return None
        try:
            resolved = folder.resolve()
        except (OSError, RuntimeError) as err:
            return f"the folder of model {name!r} cannot be resolved ({type(err).__name__})"
        if not resolved.is_relative_to(self.root):
            return (
                f"the folder of model {name!r} is a symbolic link resolving outside the repository; "
                f"move it into the repository or start the server with {_SYMLINK_SETTING}"
            )
        for file_name in _MODEL_FILES:
            path = folder / file_name
            if not path.is_symlink():
                continue
            try:
                target = path.resolve()
            except (OSError, RuntimeError) as err:
                return f"{name}/{file_name} is a symbolic link that cannot be resolved ({type(err).__name__})"
            if not target.is_relative_to(self.root):
                return (
                    f"{name}/{file_name} is a symbolic link resolving outside the repository; copy the "
                    f"file into the repository or start the server with {_SYMLINK_SETTING}"
                )
        return None

    def _scan(self) -> dict[str, Path]:
        if not self.root.is_dir():
            _log.error("model repository is not a folder", extra={"path": str(self.root)})
            return {}
        sources = scan_layouts(self.root, self._model_name)
        self._layouts = {name: source.layout for name, source in sources.items()}
        return {name: source.folder for name, source in sources.items()}

    def _load(
        self, name: str, folder: Path, fingerprint: str, refusal: str | None = None, *, serving: bool = False
    ) -> ModelEntry:
        """Load one model; any failure (``refusal``: the symlink policy's) gives a not-ready entry
        carrying the error. ``serving``: an older version of the model serves meanwhile (and keeps
        serving if this load fails)."""
        config: ModelConfig | None = None
        try:
            if refusal is not None:
                raise InvalidRequestError(refusal)
            resolved = folder.resolve()
            config, config_source = load_config(resolved, name, *self._inferred_bounds)
            entry = self._load_ready(name, folder, resolved, fingerprint, config)
            entry.info = dataclasses.replace(
                entry.info, config_source=config_source, layout=self._layouts.get(name, "")
            )
        except Exception as err:  # noqa: BLE001 - any load failure marks the model not ready, never stops the server
            error = f"{type(err).__name__}: {err}"
            if serving:
                _log.warning(
                    "the changed files of a model failed to load; its last good version keeps serving",
                    extra={"model": name, "error": error},
                )
            else:
                _log.warning("model not ready", extra={"model": name, "error": error})
            return ModelEntry(
                name, folder, fingerprint, _broken_info(name, config, self.client_text(error)), config
            )
        _log.info("model ready", extra={"model": name, "provider": entry.info.provider})
        return entry

    def _load_ready(
        self, name: str, folder: Path, resolved: Path, fingerprint: str, config: ModelConfig
    ) -> ModelEntry:
        lower, upper = config.lower_array(), config.upper_array()
        if not np.all(lower < upper):
            raise InvalidRequestError(f"{CONFIG_FILE_NAME} of {name!r}: lower must be below upper everywhere")
        # External data stays in its files: a model over 2 GB is never copied into memory here.
        model_path = resolved / MODEL_FILE_NAME
        model = load_model(model_path, external_data=False)
        session = self._factory(model_path, model, config)
        request_inputs: tuple[TensorDescription, ...] = (
            TensorDescription(config.input_name, tuple(config.input_shape)),
        )
        explained_input = TensorDescription(config.input_name, tuple(session.input_shape))
        if isinstance(session, InstanceSession):
            # Bounds, request inputs and the explained tensor come from the graph (models.cut).
            lower, upper = session.lower, session.upper
            request_inputs = tuple(
                TensorDescription(spec.name, spec.shape, spec.dtype.name)
                for spec in (session.sent_input, *session.extra_inputs)
            )
            explained_input = TensorDescription(session.explained_input, tuple(session.input_shape))
        elif tuple(session.input_shape) != tuple(config.input_shape):
            raise InvalidRequestError(
                f"the gradient graph of {name!r} takes instances of shape {session.input_shape}, but "
                f"{CONFIG_FILE_NAME} says input_shape {config.input_shape}"
            )
        graph = model.graph
        initializers = {i.name for i in graph.initializer}
        tokenizer = _read_tokenizer(resolved, name)
        info = ModelInfo(
            name=name,
            ready=True,
            error="",
            input_name=config.input_name,
            input_shape=tuple(config.input_shape),
            output_name=config.explained_tensor,
            output_shape=tuple(session.output_shape),
            lower=lower,
            upper=upper,
            labels=list(config.labels),
            feature_names=list(config.feature_names),
            preprocessing=dataclasses.asdict(config.preprocessing),
            provider=session.provider,
            description=config.description,
            graph_inputs=tuple(_describe(v) for v in graph.input if v.name not in initializers),
            graph_outputs=tuple(_describe(v) for v in graph.output),
            weights=tuple(session.weights),
            batching=str(getattr(session, "batching", "dynamic")),
            fixed_batch_size=int(getattr(session, "fixed_batch_size", None) or 0),
            version=fingerprint[:16],
            request_inputs=request_inputs,
            explained_input=explained_input,
            tokenizer=tokenizer,
            has_tokenizer=bool(tokenizer),
        )
        names = {t for node in graph.node for t in node.output if t} | {v.name for v in graph.input}
        return ModelEntry(name, folder, fingerprint, info, config, session, frozenset(names))


def _read_tokenizer(folder: Path, name: str) -> str:
    """The text of ``folder/tokenizer.json`` (``""`` when absent), checked to be a tokenizers JSON
    object of at most :data:`MAX_TOKENIZER_BYTES`; anything else fails the model's load."""
    path = folder / TOKENIZER_FILE_NAME
    if not path.exists():
        return ""
    size = path.stat().st_size
    if size > MAX_TOKENIZER_BYTES:
        raise InvalidRequestError(
            f"{TOKENIZER_FILE_NAME} of {name!r} is {size} bytes; at most {MAX_TOKENIZER_BYTES} travel to "
            f"clients in ModelInfo: remove it (clients then send token ids) or use a smaller vocabulary"
        )
    text = path.read_text(encoding="utf-8")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        raise InvalidRequestError(f"{TOKENIZER_FILE_NAME} of {name!r} is not valid JSON: {err}") from None
    if not isinstance(data, dict) or not isinstance(data.get("model"), dict):
        raise InvalidRequestError(
            f"{TOKENIZER_FILE_NAME} of {name!r} is not a Hugging Face tokenizers file (an object with a "
            f"'model' object, as Tokenizer.save writes)"
        )
    return text


def _keep_serving(previous: ModelEntry, candidate: ModelEntry) -> ModelEntry:
    """``previous`` still serving, its info naming the failed ``candidate``."""
    info = dataclasses.replace(previous.info, stale=True, candidate_error=candidate.info.error)
    return dataclasses.replace(previous, info=info, candidate_fingerprint=candidate.fingerprint)


def _served_again(entry: ModelEntry) -> ModelEntry:
    """``entry`` once its files on disk are the served version's again: no candidate left."""
    _log.info("the files of a model are back to its served version", extra={"model": entry.name})
    info = dataclasses.replace(entry.info, stale=False, candidate_error="")
    return dataclasses.replace(entry, info=info, candidate_fingerprint="")


def _broken_info(name: str, config: ModelConfig | None, error: str) -> ModelInfo:
    shape = tuple(config.input_shape) if config is not None else ()
    bounds: list[np.ndarray] = []
    for getter in ("lower_array", "upper_array"):
        try:
            bounds.append(getattr(config, getter)() if config is not None else np.zeros((), np.float32))
        except Exception:  # noqa: BLE001 - the bound itself may be what is broken
            bounds.append(np.zeros((), np.float32))
    return ModelInfo(
        name=name,
        ready=False,
        error=error,
        input_name=config.input_name if config else "",
        input_shape=shape,
        output_name=config.explained_tensor if config else "",
        output_shape=(),
        lower=bounds[0],
        upper=bounds[1],
        labels=list(config.labels) if config else [],
        feature_names=list(config.feature_names) if config else [],
        preprocessing=dataclasses.asdict(config.preprocessing) if config else {},
        provider="",
        description=config.description if config else "",
    )


def _repository_backend(backend: Backend | None, session_factory: SessionFactory | None) -> Backend | None:
    """The backend of the default session factories: ``backend``, else ONNX Runtime with its
    defaults; ``None`` with a ``session_factory`` (it opens sessions its own way)."""
    if backend is not None and session_factory is not None:
        raise ValueError("give a session_factory or a backend, not both: the factory opens its own sessions")
    if session_factory is not None or backend is not None:
        return backend
    # Imported here: models.runtime pulls in onnxruntime, which tests with fakes do not need.
    from models.runtime import OrtBackend

    return OrtBackend()


def _runtime_factory(
    cache_dir: Path,
    backend: Backend | None,
    *,
    require_bounds: bool = True,
) -> SessionFactory:
    def open_session(model_path: Path, model: onnx.ModelProto, config: ModelConfig) -> ServedModel:
        from models.runtime import GradientSession

        if needs_instance_session(model, config):
            return open_instance_session(
                model_path, model, config, cache_dir, backend=backend, require_bounds=require_bounds
            )

        def graph(rebuild: bool) -> GradientGraph:
            return gradient_graph_for(
                model_path,
                config.input_name,
                config.input_shape,
                config.explained_tensor,
                cache_dir,
                model=model,
                rebuild=rebuild,
            )

        def open_graph(graph: GradientGraph) -> Any:
            session = GradientSession(
                graph.path if graph.path is not None else graph.model,  # type: ignore[arg-type]
                input_name=config.input_name,
                external_data_dir=graph.external_data_dir,
                backend=backend,
            )
            explained = session.metadata.explained
            if explained != config.explained_tensor:
                raise InvalidModelError(
                    f"the gradient graph explains {explained!r}, not {config.explained_tensor!r}"
                )
            return session

        try:
            session = open_graph(graph(rebuild=False))
        except InvalidModelError as err:
            # A verified entry that still does not open (or explains another tensor) is rebuilt once.
            _log.warning(
                "rebuilding a cached gradient graph that does not open",
                extra={"path": str(cache_dir), "error": str(err)},
            )
            session = open_graph(graph(rebuild=True))
        return session  # type: ignore[no-any-return]

    return open_session
