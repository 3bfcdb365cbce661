"""The transport-free application core: one per process, built once from the settings, shared by
every front end (the gRPC servicer in ``service/servicer.py``, the HTTP app in
``service/http_app.py``), as MLServer's data plane serves both its REST and gRPC servers.

    core = MollifyCore(settings)          # models loaded, nothing listening
    core.mark_started()
    with core.call("Explain", request_id_header) as call: ...

It owns the model repository, the scheduler, the explainer, the metrics and the health state, and
the per-call bookkeeping (:class:`Call`: request id, timing, one log line, metrics, and the
failure from the one status table of ``service/status.py``). Front ends only translate their
wire format into domain calls and a :class:`~service.status.Failure` into their own status.

Health: live until stopped; ready once started, while at least one model is ready and before a
stop begins draining; one entry per model, ready when that model is.
"""

from __future__ import annotations

import logging
import re
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from service.auth import bearer_token_matches
from service.explainer import Explainer, ExplainQuery, Limits
from service.metrics import Metrics
from service.repository import ModelRepository, SessionFactory
from service.scheduler import Cancellation, Scheduler
from service.settings import Settings
from service.status import Failure, failure_for
from service.vocabulary import ExplainProgress, InstanceExplanation, ModelInfo, ReloadResult

if TYPE_CHECKING:
    from models.runtime.backend import Backend

__all__ = ["Call", "HealthState", "MollifyCore", "default_backend", "request_id_from"]

_log = logging.getLogger("mollify.service.rpc")
_REQUEST_ID = re.compile(r"[A-Za-z0-9_.:-]{1,64}")


def request_id_from(given: str | None) -> str:
    """The caller's request id when well formed (``[A-Za-z0-9_.:-]{1,64}``), else a fresh one."""
    return str(given) if given and _REQUEST_ID.fullmatch(str(given)) else uuid.uuid4().hex[:16]


def default_backend(settings: Settings) -> Backend:
    """ONNX Runtime as ``settings`` configure it: device, execution providers, I/O binding and the
    CUDA options (:meth:`Settings.runtime_options`), intra-op threads (:meth:`Settings.session_threads`).

    Raises:
        service.settings.SettingsError: a provider of ``settings.providers`` does not load here.
    """
    from models.runtime import OrtBackend  # onnxruntime: only where sessions are opened

    return OrtBackend(
        device=settings.device,
        intra_op_threads=settings.session_threads(),
        options=settings.runtime_options(),
    )


def _default_repository() -> Path:
    from models.demo import repository_path

    return repository_path()


@dataclass(frozen=True)
class HealthState:
    """What health checks answer.

    Attributes:
        ready: overall readiness (started, a model ready, not stopping).
        models: readiness of each model in the repository.
        removed: models that were in the repository and are no longer.
        stopping: a stop has begun: everything reports not ready.
    """

    ready: bool
    models: dict[str, bool]
    removed: frozenset[str] = frozenset()
    stopping: bool = False


class Call:
    """One request's bookkeeping, whatever the transport: request id, timing, log line, metrics.

    Args:
        method: the method name as metrics and logs label it (``Explain``, ``http.v1.explain``, ...).
        metrics: where the outcome is counted.
        request_id: the caller's request id header or metadata value (``None``: none given).
    """

    def __init__(self, method: str, metrics: Metrics, request_id: str | None = None) -> None:
        self.method = method
        self.metrics = metrics
        self.started = time.perf_counter()
        self.id = request_id_from(request_id)
        self.fields: dict[str, Any] = {}

    def succeeded(self) -> None:
        self._record("OK", logging.INFO)

    def abandoned(self) -> None:
        self._record("CANCELLED", logging.INFO, error="the client stopped reading the stream")

    def failed(self, error: BaseException) -> Failure:
        """Record ``error`` and return how to answer it (status code, HTTP status, message)."""
        failure = failure_for(error, self.id)
        if failure.unexpected:
            _log.error(
                "unexpected error", exc_info=error, extra={"request_id": self.id, "method": self.method}
            )
        internal = failure.http_status == 500
        self._record(
            failure.code.name,
            logging.WARNING if internal else logging.INFO,
            error=str(error) if internal else failure.message,
        )
        return failure

    def _record(self, code: str, level: int, **extra: Any) -> None:
        seconds = time.perf_counter() - self.started
        self.metrics.request_done(self.method, code, seconds)
        _log.log(
            level,
            "rpc",
            extra={
                "request_id": self.id,
                "method": self.method,
                "code": code,
                "ms": round(seconds * 1000, 3),
                **self.fields,
                **extra,
            },
        )


class MollifyCore:
    """Repository, scheduler, explainer, metrics and health, built once from ``settings``.

    Args:
        settings: the one settings object.
        backend: runs every model's graphs (a :class:`models.runtime.backend.Backend`: another
            runtime, a remote one); default: ONNX Runtime as the settings say (device, execution
            providers, I/O binding, intra-op threads), which a given backend replaces.
        session_factory: opens gradient graphs its own way (tests inject fakes); excludes ``backend``.

    Attributes:
        settings, metrics, repository, scheduler, explainer: the components.
        cut_off: set when a stop's grace period is over; explanations still running end UNAVAILABLE.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        backend: Backend | None = None,
        session_factory: SessionFactory | None = None,
    ) -> None:
        self.settings = settings
        self.metrics = Metrics()
        self.cut_off = threading.Event()
        self._token = settings.token.encode() if settings.token is not None else None
        self._listeners: list[Callable[[HealthState], None]] = []
        self._health_lock = threading.Lock()
        self._started = False
        self._stopping = False
        self._stopped = False
        self._models: dict[str, bool] = {}
        self._removed: frozenset[str] = frozenset()
        if backend is None and session_factory is None:
            backend = default_backend(settings)
        self.repository = ModelRepository(
            settings.model_repository or _default_repository(),
            settings.resolved_cache_dir(),
            backend=backend,
            session_factory=session_factory,
            max_output_graphs=settings.max_output_graphs,
            max_explained_inputs=settings.max_explained_inputs,
            on_change=self._models_changed,
            allow_symlinks_outside=settings.allow_symlinks_outside,
            reload_min_interval_s=settings.reload_min_interval_s,
            model_name=settings.model_name,
            inferred_bounds=(settings.inferred_lower, settings.inferred_upper),
        )
        self.scheduler = Scheduler(
            settings.max_concurrent_requests,
            settings.max_queued_requests,
            on_change=self.metrics.scheduler_changed,
        )
        self.explainer = Explainer(
            self.repository,
            self.scheduler,
            Limits(
                max_instances=settings.max_instances,
                max_input_elements=settings.max_input_elements,
                max_evaluations=settings.max_evaluations,
            ),
            memory_budget_bytes=settings.memory_budget_bytes,
            observer=self.metrics,
        )

    def load(self) -> None:
        """Load the repository's models (before any front end starts)."""
        self.repository.reload(may_refuse=False)

    # ---------------------------------------------------------------------------- calls

    def call(self, method: str, request_id: str | None = None) -> Call:
        return Call(method, self.metrics, request_id)

    def authorized(self, authorization: str | None) -> bool:
        """Whether a request with this ``authorization`` value may pass (always, without a token)."""
        if self._token is None:
            return True
        return authorization is not None and bearer_token_matches(self._token, authorization)

    def explain(
        self,
        query: ExplainQuery,
        cancellation: Cancellation,
        progress: Callable[[ExplainProgress], None] | None = None,
    ) -> list[InstanceExplanation]:
        return self.explainer.explain(query, cancellation, progress)

    def list_models(self) -> list[ModelInfo]:
        return self.repository.list_models()

    def model(self, name: str) -> ModelInfo:
        """The model named ``name``, ready or not (raises ``UnknownModelError`` / ``InvalidRequestError``)."""
        return self.repository.entry(name).info

    def model_ready(self, name: str) -> bool:
        """Whether the model named ``name`` can explain now (false while a stop drains).

        Raises:
            UnknownModelError: no such model; InvalidRequestError: not a valid model name.
        """
        info = self.model(name)
        return info.ready and not self.health().stopping

    def reload(self, *, may_refuse: bool = True) -> ReloadResult:
        return self.repository.reload(may_refuse=may_refuse)

    # --------------------------------------------------------------------------- health

    def add_health_listener(self, listener: Callable[[HealthState], None]) -> None:
        """Call ``listener`` with the health state now and after every change."""
        with self._health_lock:
            self._listeners.append(listener)
            listener(self._state())

    def health(self) -> HealthState:
        with self._health_lock:
            return self._state()

    @property
    def live(self) -> bool:
        return not self._stopped

    def mark_started(self) -> None:
        self._change(started=True)

    def mark_stopping(self) -> None:
        """A stop begins: health reports not ready (overall and every model) from now on."""
        self._change(stopping=True)

    def mark_stopped(self) -> None:
        self._stopped = True

    def _change(self, *, started: bool | None = None, stopping: bool | None = None) -> None:
        with self._health_lock:
            if started is not None:
                self._started = started
            if stopping is not None:
                self._stopping = stopping
            state = self._state()
            for listener in self._listeners:  # under the lock: listeners see changes in order
                listener(state)

    def _state(self) -> HealthState:
        if self._stopping:
            return HealthState(False, dict.fromkeys(self._models, False), self._removed, stopping=True)
        ready = self._started and any(self._models.values())
        return HealthState(ready, dict(self._models), self._removed)

    def _models_changed(self, models: list[ModelInfo]) -> None:
        self.metrics.models_changed(models)
        with self._health_lock:
            names = {m.name: m.ready for m in models}
            self._removed = frozenset((self._removed | set(self._models)) - set(names))
            self._models = names
            state = self._state()
            for listener in self._listeners:  # under the lock: listeners see changes in order
                listener(state)
