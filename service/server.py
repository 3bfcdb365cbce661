"""The server factory: settings in, a bound (not yet started) server and its port out.

    server, port = create_server(Settings(address="127.0.0.1:0"))
    server.start()
    ...
    server.stop(grace=5, drain_s=2).wait()

Builds the transport-free core (``service/core.py``: repository, scheduler, explainer, metrics,
health) once and puts the front ends over it: gRPC (the servicer, the standard ``grpc.health.v1``
service with overall ``""``, ``mollify.v1.ExplainerService`` and one entry per model name, server
reflection, bearer-token auth, TLS) and, with ``settings.http_address``, HTTP (KServe v1 and the
Open Inference Protocol, ``service/http_app.py``, with the same auth, TLS and limits, and
``/metrics``); Prometheus metrics also on their own port when ``metrics_port`` is set.

Health: overall and service-wide SERVING while started and at least one model is ready
(NOT_SERVING when every load failed); one entry per model, SERVING when that model is ready
(also while a reload's newer files of it fail to load and its last good version keeps serving).
"""

from __future__ import annotations

import errno
import logging
import math
import socket
import threading
import time
from concurrent import futures
from pathlib import Path
from typing import TYPE_CHECKING

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from protos.mollify.v1 import explainer_pb2 as pb
from service.auth import BearerTokenInterceptor
from service.core import HealthState, MollifyCore
from service.http_server import HttpFrontEnd
from service.memory import format_size
from service.repository import SessionFactory
from service.servicer import ExplainerServicer, add_servicer_to_server
from service.settings import Settings
from service.vocabulary import ReloadResult

if TYPE_CHECKING:
    from models.runtime.backend import Backend

__all__ = ["SERVICE_NAME", "MollifyServer", "create_server"]

SERVICE_NAME: str = pb.DESCRIPTOR.services_by_name["ExplainerService"].full_name
_log = logging.getLogger("mollify.service.server")
# Threads beyond the explanation slots and queue, so that health checks, model listings and
# immediate refusals are answered while every slot is busy.
_SPARE_THREADS = 8
# After the grace period, explanations still running stop at their next chunk and answer
# UNAVAILABLE; gRPC cancels whatever has not answered this many seconds later.
_CUT_OFF_S = 2.0
_POLL_S = 0.02
_WAKE_S = 0.1
_SERVING = health_pb2.HealthCheckResponse.SERVING
_NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
_UNKNOWN = health_pb2.HealthCheckResponse.SERVICE_UNKNOWN


class MollifyServer:
    """A configured gRPC server; mirrors ``grpc.Server`` (``start``, ``stop``, ``wait_for_termination``).

    Attributes:
        settings: the settings it was built from.
        port: the bound gRPC port.
        metrics_port: the bound metrics port once started (``None`` when metrics are off).
        repository, scheduler, explainer, metrics, health: its components.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        backend: Backend | None = None,
        session_factory: SessionFactory | None = None,
    ) -> None:
        self.settings = settings
        self.core = MollifyCore(settings, backend=backend, session_factory=session_factory)
        self.metrics = self.core.metrics
        self.repository = self.core.repository
        self.scheduler = self.core.scheduler
        self.explainer = self.core.explainer
        self.health = health.HealthServicer(experimental_non_blocking=True)
        self._grpc_health_names: set[str] = set()
        self._hurry = threading.Event()  # a second stop(): no more draining or grace
        self._stopped = threading.Event()
        self._stop_lock = threading.Lock()
        self._stopper: threading.Thread | None = None
        rpc_limit = settings.max_concurrent_requests + settings.max_queued_requests + _SPARE_THREADS
        interceptors = []
        if settings.token is not None:
            exempt = () if settings.auth_health else ("/grpc.health.v1.Health/",)
            interceptors.append(
                BearerTokenInterceptor(settings.token, exempt_prefixes=exempt, on_reject=self._rejected)
            )
        self._server = grpc.server(
            futures.ThreadPoolExecutor(max_workers=rpc_limit, thread_name_prefix="mollify-rpc"),
            interceptors=interceptors,
            options=[
                ("grpc.max_receive_message_length", settings.max_message_bytes),
                ("grpc.max_send_message_length", settings.max_message_bytes),
                ("grpc.so_reuseport", 0),
            ],
            maximum_concurrent_rpcs=rpc_limit,
        )
        add_servicer_to_server(
            ExplainerServicer(self.explainer, self.repository, self.metrics, cut_off=self.core.cut_off),
            self._server,
        )
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self._server)
        if settings.reflection:
            reflection.enable_server_reflection(
                (SERVICE_NAME, health.SERVICE_NAME, reflection.SERVICE_NAME), self._server
            )
        self.port = self._bind(settings)
        self.http: HttpFrontEnd | None = None
        self.http_port: int | None = None
        if settings.http_address is not None:
            self.http = HttpFrontEnd(
                self.core,
                settings.http_address,
                tls_cert=settings.tls_cert,
                tls_key=settings.tls_key,
                grace_s=settings.grace_period_s + _CUT_OFF_S,
            )
            self.http_port = self.http.port
        self.metrics_port: int | None = None
        # Health stays NOT_SERVING until start(); the models load now so start() serves at once.
        self.core.add_health_listener(self._grpc_health)
        self.core.load()

    def _bind(self, settings: Settings) -> int:
        _check_bindable(settings.host, settings.port)
        try:
            if settings.tls_cert is not None and settings.tls_key is not None:
                credentials = grpc.ssl_server_credentials(
                    [(Path(settings.tls_key).read_bytes(), Path(settings.tls_cert).read_bytes())]
                )
                port: int = self._server.add_secure_port(settings.address, credentials)
            else:
                port = self._server.add_insecure_port(settings.address)
        except RuntimeError as err:  # grpc's "Failed to bind to address"
            raise OSError(
                f"cannot listen on {settings.address} ({err}); choose another --address / MOLLIFY_ADDRESS"
            ) from None
        if port == 0:
            raise OSError(f"cannot listen on {settings.address}; choose another --address / MOLLIFY_ADDRESS")
        return port

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        self._server.start()
        if self.http is not None:
            self.http.start()
        if self.settings.metrics_port:
            self.metrics_port = self.metrics.serve(self.settings.metrics_address, self.settings.metrics_port)
        self.core.mark_started()
        settings = self.settings
        _log.info(
            "serving",
            extra={
                "port": self.port,
                "http_port": self.http_port,
                "tls": settings.tls_cert is not None,
                "auth": settings.token is not None,
                "metrics_port": self.metrics_port,
                "repository": str(self.repository.root),
                "memory_budget_bytes": settings.memory_budget_bytes,
                "memory_budget": f"{format_size(settings.memory_budget_bytes)} per explanation "
                f"({settings.memory_budget_source})",
                "max_concurrent_requests": settings.max_concurrent_requests,
            },
        )

    def stop(self, grace: float | None = None, *, drain_s: float = 0.0) -> threading.Event:
        """Stop serving; returns at once the event set once the server has stopped.

        1. Drain: health turns NOT_SERVING (overall, service and every model) while calls are still
           served as usual for ``drain_s`` seconds, so that load balancers and Kubernetes readiness
           probes stop routing here before anything is refused.
        2. Close: the listener closes and new explanations are refused with UNAVAILABLE; those in
           flight get ``grace`` seconds (``None``: none) to finish.
        3. Cut off: explanations still running or queued then stop at their next chunk and answer
           UNAVAILABLE (logged so); gRPC cancels any call still open a moment later.

        A second call hurries a stop under way: the drain and the grace end at once.
        """
        with self._stop_lock:
            if self._stopper is not None:
                self._hurry.set()
                return self._stopped
            self.core.mark_stopping()
            self.health.enter_graceful_shutdown()
            self._stopper = threading.Thread(
                target=self._shut_down, args=(grace or 0.0, drain_s), name="mollify-shutdown", daemon=True
            )
            self._stopper.start()
        return self._stopped

    def wait_for_termination(self, timeout: float | None = None) -> bool:
        """Block until :meth:`stop` has finished (or ``timeout`` seconds); true when it has."""
        deadline = math.inf if timeout is None else time.monotonic() + timeout
        # Short waits: a signal delivered to another thread only runs its Python handler once the
        # main thread wakes up, and an untimed wait would never wake it.
        while not self._stopped.wait(max(0.0, min(_WAKE_S, deadline - time.monotonic()))):
            if time.monotonic() >= deadline:
                return False
        return True

    def reload_models(self) -> ReloadResult:
        """Rescan the repository (what SIGHUP does; the ReloadModels RPC too, but may be refused when
        too many are waiting): shares a reload with concurrent requests, at most one per
        ``settings.reload_min_interval_s``."""
        return self.repository.reload(may_refuse=False)

    # -------------------------------------------------------------------- helpers

    def _shut_down(self, grace: float, drain_s: float) -> None:
        if drain_s > 0:
            _log.info("draining: health NOT_SERVING, still serving", extra={"drain_delay_s": drain_s})
            self._hurry.wait(drain_s)
        self.scheduler.close()
        done = self._server.stop(grace + _CUT_OFF_S)
        http_stopped = (
            threading.Thread(target=self.http.stop, name="mollify-http-stop", daemon=True)
            if self.http
            else None
        )
        if http_stopped is not None:
            http_stopped.start()
        _log.info(
            "listener closed",
            extra={"in_flight": self.scheduler.computing + self.scheduler.queued, "grace_period_s": grace},
        )
        deadline = time.monotonic() + grace
        while not done.is_set() and not self._hurry.is_set() and time.monotonic() < deadline:
            done.wait(_POLL_S)
        self.core.cut_off.set()
        if self._hurry.is_set():
            self._server.stop(_CUT_OFF_S)
            if self.http is not None:
                self.http.hurry()
        done.wait(4 * _CUT_OFF_S)  # gRPC cancels every call _CUT_OFF_S after the cut-off
        if http_stopped is not None:
            http_stopped.join(4 * _CUT_OFF_S)
        # gRPC has closed every call; explanations notice at their next chunk. Wait for them so that
        # the process does not exit under work still using its thread pools.
        deadline = time.monotonic() + _CUT_OFF_S
        while self.scheduler.computing + self.scheduler.queued and time.monotonic() < deadline:
            time.sleep(_POLL_S)
        self.metrics.stop()
        self.core.mark_stopped()
        _log.info("stopped")
        self._stopped.set()

    def _grpc_health(self, state: HealthState) -> None:
        """Mirror the core's health in grpc.health.v1: overall and service-wide, one entry per
        model, SERVICE_UNKNOWN for a removed model. While stopping, ``enter_graceful_shutdown`` has
        already set everything NOT_SERVING and ignores further changes."""
        if state.stopping:
            return
        overall = _SERVING if state.ready else _NOT_SERVING
        self.health.set("", overall)
        self.health.set(SERVICE_NAME, overall)
        for name, ready in state.models.items():
            self.health.set(name, _SERVING if ready else _NOT_SERVING)
        for gone in self._grpc_health_names - set(state.models):
            self.health.set(gone, _UNKNOWN)
        self._grpc_health_names = set(state.models)

    def _rejected(self, method: str) -> None:
        self.metrics.request_done(method.rsplit("/", 1)[-1], grpc.StatusCode.UNAUTHENTICATED.name, 0.0)


def _check_bindable(host: str, port: int) -> None:
    """Raise ``OSError`` naming the reason when no address of ``host`` can listen on ``port``.

    gRPC only says "Failed to bind"; a plain socket says why (in use, not permitted, not an
    address of this machine). Port 0 always binds.
    """
    if port == 0:
        return
    bare = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    try:
        addresses = socket.getaddrinfo(bare or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as err:
        raise OSError(
            f"cannot listen on {host}:{port}: cannot resolve {host!r} ({err.strerror}); "
            "choose another --address / MOLLIFY_ADDRESS"
        ) from None
    failure: OSError | None = None
    for family, kind, protocol, _, address in addresses:
        try:
            with socket.socket(family, kind, protocol) as probe:
                probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as gRPC binds
                probe.bind(address)
                return
        except OSError as err:
            failure = err
    if failure is None:
        return
    reason = {
        errno.EADDRINUSE: "the address is already in use (another server listens there)",
        errno.EACCES: "permission denied (ports below 1024 need privileges)",
        errno.EADDRNOTAVAIL: "not an address of this machine",
    }.get(failure.errno or 0, failure.strerror or str(failure))
    raise OSError(f"cannot listen on {host}:{port}: {reason}; choose another --address / MOLLIFY_ADDRESS")


def create_server(
    settings: Settings,
    *,
    backend: Backend | None = None,
    session_factory: SessionFactory | None = None,
) -> tuple[MollifyServer, int]:
    """Build a server from ``settings``: models loaded, port bound, not yet started.

    Args:
        settings: the one settings object; ``settings.address`` with port 0 binds a free port.
        backend: runs the models' graphs (a :class:`models.runtime.backend.Backend`, e.g. another
            runtime); default: ONNX Runtime configured by ``settings`` (device, providers, threads).
            GetModel reports its provider.
        session_factory: opens gradient graphs its own way (tests inject fakes); excludes ``backend``;
            default ``GradientSession`` on the backend.

    Returns:
        The server and the port it is bound to.
    """
    server = MollifyServer(settings, backend=backend, session_factory=session_factory)
    return server, server.port
