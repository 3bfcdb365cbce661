"""The HTTP front end's listener: uvicorn serving :func:`service.http_app.create_app` on a thread.

    front = HttpFrontEnd(core, "0.0.0.0:8080", tls_cert=None, tls_key=None)   # bound, not serving
    front.start(); ...; front.stop(grace_s=30)

The socket is bound in the constructor (port 0: any free port, read back in :attr:`port`), so a
bad address fails at start-up with the reason, like the gRPC port. With a certificate and key the
port speaks HTTPS only.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from pathlib import Path

import uvicorn

from service.core import MollifyCore
from service.http_app import create_app

__all__ = ["HttpFrontEnd"]

_log = logging.getLogger("mollify.service.http")
_START_TIMEOUT_S = 10.0
_POLL_S = 0.01


def split_address(address: str) -> tuple[str, int]:
    """``"host:port"`` (``"[::]:8080"`` for IPv6) → ``(host, port)``."""
    host, _, port = address.rpartition(":")
    return host.strip("[]"), int(port)


class HttpFrontEnd:
    """uvicorn on its own thread and event loop, over one core.

    Args:
        core: the application core.
        address: ``host:port`` to listen on.
        tls_cert, tls_key: PEM files; both or neither.
        grace_s: how long a stop waits for requests in flight before cancelling them.

    Raises:
        OSError: the address cannot be listened on (the message says why and names the setting).
    """

    def __init__(
        self,
        core: MollifyCore,
        address: str,
        *,
        tls_cert: Path | None = None,
        tls_key: Path | None = None,
        grace_s: float = 30.0,
    ) -> None:
        host, port = split_address(address)
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        try:
            self._socket = socket.create_server((host, port), family=family, backlog=1024)
        except OSError as err:
            raise OSError(
                f"cannot listen on {address} for HTTP ({err.strerror or err}); choose another "
                "--http-address / MOLLIFY_HTTP_ADDRESS"
            ) from None
        self.port: int = self._socket.getsockname()[1]
        self.tls = tls_cert is not None
        config = uvicorn.Config(
            create_app(core),
            log_config=None,
            access_log=False,
            lifespan="off",
            server_header=False,
            ssl_certfile=str(tls_cert) if tls_cert else None,
            ssl_keyfile=str(tls_key) if tls_key else None,
            timeout_graceful_shutdown=max(1, round(grace_s)),
            limit_concurrency=None,
        )
        self._server = uvicorn.Server(config)
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Serve on a thread; returns once the listener accepts connections."""
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [self._socket]}, name="mollify-http", daemon=True
        )
        self._thread.start()
        deadline = time.monotonic() + _START_TIMEOUT_S
        while not self._server.started and self._thread.is_alive() and time.monotonic() < deadline:
            time.sleep(_POLL_S)
        if not self._server.started:
            raise OSError("the HTTP front end did not start; see the log")

    def stop(self, timeout: float | None = None) -> None:
        """Stop accepting, let requests in flight finish (up to the grace), then stop; blocks."""
        self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout)
        self._socket.close()

    def hurry(self) -> None:
        """Cancel requests still in flight now (a second stop)."""
        self._server.force_exit = True
