"""Prometheus metrics of one server, in a registry of its own (two servers in one process, as in
tests, never share counters), served over HTTP when a metrics port is set.

    mollify_requests_total{method, code}               RPCs finished, by status code
    mollify_request_duration_seconds{method}           RPC latency histogram
    mollify_gradient_evaluations_total{model}          VJP evaluations (rate() = evaluations/s)
    mollify_samples_total{model}                       Monte Carlo samples (rate() = samples/s)
    mollify_compute_seconds_total{model}               time spent computing explanations
    mollify_queue_depth                                requests waiting for a computing slot
    mollify_requests_computing                         requests holding a computing slot
    mollify_models{state}                              models ready / not ready
"""

from __future__ import annotations

from http.server import ThreadingHTTPServer
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest, start_http_server

from service.vocabulary import ModelInfo

__all__ = ["Metrics"]

_LATENCY_BUCKETS = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
    300.0,
)


class Metrics:
    """The server's metrics; also the explainer's :class:`service.explainer.WorkObserver`."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "mollify_requests",
            "RPCs finished, by method and status code",
            ["method", "code"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "mollify_request_duration_seconds",
            "RPC latency",
            ["method"],
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.evaluations = Counter(
            "mollify_gradient_evaluations", "gradient (VJP) evaluations", ["model"], registry=self.registry
        )
        self.samples = Counter(
            "mollify_samples", "Monte Carlo samples drawn", ["model"], registry=self.registry
        )
        self.compute_seconds = Counter(
            "mollify_compute_seconds",
            "seconds spent computing explanations",
            ["model"],
            registry=self.registry,
        )
        self.queue_depth = Gauge(
            "mollify_queue_depth", "requests waiting for a computing slot", registry=self.registry
        )
        self.computing = Gauge(
            "mollify_requests_computing", "requests holding a computing slot", registry=self.registry
        )
        self.models = Gauge(
            "mollify_models", "models in the repository by state", ["state"], registry=self.registry
        )
        self._http: ThreadingHTTPServer | None = None
        self._per_request: dict[tuple[str, str], tuple[Any, Any]] = {}
        self._per_model: dict[str, tuple[Any, Any, Any]] = {}

    def request_done(self, method: str, code: str, seconds: float) -> None:
        children = self._per_request.get((method, code))
        if children is None:
            # labels() takes a lock and formats its values on every call: look the children up once.
            children = (self.requests.labels(method=method, code=code), self.latency.labels(method=method))
            self._per_request[(method, code)] = children
        children[0].inc()
        children[1].observe(seconds)

    def explanation_done(self, model: str, samples: int, gradient_evaluations: int, seconds: float) -> None:
        children = self._per_model.get(model)
        if children is None:
            children = (
                self.samples.labels(model=model),
                self.evaluations.labels(model=model),
                self.compute_seconds.labels(model=model),
            )
            self._per_model[model] = children
        children[0].inc(samples)
        children[1].inc(gradient_evaluations)
        children[2].inc(seconds)

    def scheduler_changed(self, computing: int, queued: int) -> None:
        self.computing.set(computing)
        self.queue_depth.set(queued)

    def models_changed(self, models: list[ModelInfo]) -> None:
        ready = sum(1 for m in models if m.ready)
        self.models.labels(state="ready").set(ready)
        self.models.labels(state="not_ready").set(len(models) - ready)

    def exposition(self) -> bytes:
        """The current metrics in the Prometheus text format."""
        return bytes(generate_latest(self.registry))

    def serve(self, address: str, port: int) -> int:
        """Serve ``/metrics`` over HTTP on ``address:port`` (port 0: any free one); returns the port."""
        server: Any
        server, _thread = start_http_server(port, addr=address, registry=self.registry)
        self._http = server
        return int(server.server_port)

    def stop(self) -> None:
        if self._http is not None:
            self._http.shutdown()
            self._http.server_close()
            self._http = None
