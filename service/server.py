"""The server factory: settings in, a bound (not yet started) server and its port out.

    server, port = create_server(Settings(address="127.0.0.1:0"))
    server.start()
    ...
    server.stop(grace=5).wait()

Wires the model repository, scheduler and explainer (the domain), the servicer, the standard
``grpc.health.v1`` service (overall ``""``, ``mollify.v1.ExplainerService`` and one entry per
model name), server reflection, bearer-token auth, TLS and Prometheus metrics.
"""

from __future__ import annotations

import logging
import threading
from concurrent import futures
from pathlib import Path

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from protos.mollify.v1 import explainer_pb2 as pb
from protos.mollify.v1 import explainer_pb2_grpc as pb_grpc
from service.auth import BearerTokenInterceptor
from service.explainer import Explainer, Limits
from service.metrics import Metrics
from service.repository import ModelRepository, SessionFactory
from service.scheduler import Scheduler
from service.servicer import ExplainerServicer
from service.settings import Settings
from service.vocabulary import ModelInfo, ReloadResult

__all__ = ["SERVICE_NAME", "MollifyServer", "create_server"]

SERVICE_NAME: str = pb.DESCRIPTOR.services_by_name["ExplainerService"].full_name
_log = logging.getLogger("mollify.service.server")
# Threads beyond the explanation slots and queue, so that health checks, model listings and
# immediate refusals are answered while every slot is busy.
_SPARE_THREADS = 8
_SERVING = health_pb2.HealthCheckResponse.SERVING
_NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
_UNKNOWN = health_pb2.HealthCheckResponse.SERVICE_UNKNOWN


def _default_repository() -> Path:
    from models.demo import repository_path

    return repository_path()


class MollifyServer:
    """A configured gRPC server; mirrors ``grpc.Server`` (``start``, ``stop``, ``wait_for_termination``).

    Attributes:
        settings: the settings it was built from.
        port: the bound gRPC port.
        metrics_port: the bound metrics port once started (``None`` when metrics are off).
        repository, scheduler, explainer, metrics, health: its components.
    """

    def __init__(self, settings: Settings, *, session_factory: SessionFactory | None = None) -> None:
        self.settings = settings
        self.metrics = Metrics()
        self.health = health.HealthServicer(experimental_non_blocking=True)
        self._model_names: set[str] = set()
        self._stopping = threading.Event()
        self.repository = ModelRepository(
            settings.model_repository or _default_repository(),
            settings.resolved_cache_dir(),
            device=settings.device,
            intra_op_threads=settings.session_threads(),
            session_factory=session_factory,
            max_output_graphs=settings.max_output_graphs,
            on_change=self._models_changed,
        )
        self.scheduler = Scheduler(
            settings.max_concurrent_requests, settings.max_queued_requests, on_change=self.metrics.scheduler_changed
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
        pb_grpc.add_ExplainerServiceServicer_to_server(
            ExplainerServicer(self.explainer, self.repository, self.metrics), self._server
        )
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self._server)
        if settings.reflection:
            reflection.enable_server_reflection(
                (SERVICE_NAME, health.SERVICE_NAME, reflection.SERVICE_NAME), self._server
            )
        self.port = self._bind(settings)
        self.metrics_port: int | None = None
        # Health stays NOT_SERVING until start(); the models load now so start() serves at once.
        self.health.set("", _NOT_SERVING)
        self.health.set(SERVICE_NAME, _NOT_SERVING)
        self.repository.reload()

    def _bind(self, settings: Settings) -> int:
        if settings.tls_cert is not None and settings.tls_key is not None:
            credentials = grpc.ssl_server_credentials(
                [(Path(settings.tls_key).read_bytes(), Path(settings.tls_cert).read_bytes())]
            )
            port = self._server.add_secure_port(settings.address, credentials)
        else:
            port = self._server.add_insecure_port(settings.address)
        if port == 0:
            raise OSError(f"cannot listen on {settings.address} (setting --address / MOLLIFY_ADDRESS)")
        return port

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        self._server.start()
        if self.settings.metrics_port:
            self.metrics_port = self.metrics.serve(self.settings.metrics_address, self.settings.metrics_port)
        self.health.set("", _SERVING)
        self.health.set(SERVICE_NAME, _SERVING)
        _log.info(
            "serving",
            extra={"port": self.port, "tls": self.settings.tls_cert is not None, "auth": self.settings.token is not None,
                   "metrics_port": self.metrics_port, "repository": str(self.repository.root)},
        )

    def stop(self, grace: float | None = None) -> threading.Event:
        """Stop: health NOT_SERVING, no new RPCs, in-flight ones get ``grace`` seconds to finish.

        Returns the event set once the server has stopped (``grpc.Server.stop``'s).
        """
        self._stopping.set()
        self.health.enter_graceful_shutdown()
        self.scheduler.close()
        done = self._server.stop(grace)

        def stop_metrics() -> None:
            done.wait()
            self.metrics.stop()

        threading.Thread(target=stop_metrics, name="mollify-metrics-stop", daemon=True).start()
        return done

    def wait_for_termination(self, timeout: float | None = None) -> bool:
        return bool(self._server.wait_for_termination(timeout))

    def reload_models(self) -> ReloadResult:
        """Rescan the repository now (what SIGHUP and the ReloadModels RPC do)."""
        return self.repository.reload()

    # -------------------------------------------------------------------- helpers

    def _models_changed(self, models: list[ModelInfo]) -> None:
        self.metrics.models_changed(models)
        if self._stopping.is_set():
            return
        names = {m.name for m in models}
        for info in models:
            self.health.set(info.name, _SERVING if info.ready else _NOT_SERVING)
        for gone in self._model_names - names:
            self.health.set(gone, _UNKNOWN)
        self._model_names = names

    def _rejected(self, method: str) -> None:
        self.metrics.request_done(method.rsplit("/", 1)[-1], grpc.StatusCode.UNAUTHENTICATED.name, 0.0)


def create_server(
    settings: Settings, *, session_factory: SessionFactory | None = None
) -> tuple[MollifyServer, int]:
    """Build a server from ``settings``: models loaded, port bound, not yet started.

    Args:
        settings: the one settings object; ``settings.address`` with port 0 binds a free port.
        session_factory: opens gradient graphs (tests may inject fakes); default ``GradientSession``.

    Returns:
        The server and the port it is bound to.
    """
    server = MollifyServer(settings, session_factory=session_factory)
    return server, server.port
