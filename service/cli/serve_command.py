"""``mollify serve``: run the explanation server until SIGTERM or Ctrl-C.

    mollify serve [--address HOST:PORT] [--model-repository DIR] [--token-file FILE] ...

With no arguments it serves the bundled demo models on 127.0.0.1:50051. Every setting is a flag
and a ``MOLLIFY_*`` environment variable (the flag wins); ``mollify serve --help`` lists them.
Once listening it prints ``listening on HOST:PORT`` on stdout (the real port when port 0 was asked),
followed by ``(http HOST:PORT)`` when the HTTP front end is on (``--http-address``).

Signals: SIGTERM or SIGINT set health to NOT_SERVING and keep serving for ``--drain-delay-s``
seconds (load balancers stop routing here), then close the listener and give in-flight calls
``--grace-period-s`` seconds to finish; those still running end with UNAVAILABLE; exit 0. A second
signal skips what is left of the delay and the grace. SIGHUP rescans the model repository.

Failures print one ``CODE: message`` line on stderr. Exit codes: 0 stopped by a signal; 2 invalid
settings (``SETTINGS``, including ``--providers`` naming an execution provider that does not load
here) or the address cannot be listened on (``UNAVAILABLE``, e.g. a port already in use); 130
interrupted while starting.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from types import FrameType
from typing import Any

from threadpoolctl import threadpool_limits

from service.errors import SettingsError
from service.logs import configure_logging
from service.server import MollifyServer, create_server
from service.settings import Settings, add_arguments

EXIT_OK = 0
EXIT_SETTINGS = 2
EXIT_INTERRUPTED = 130


def register(subparsers: argparse._SubParsersAction[Any]) -> None:
    parser = subparsers.add_parser(
        "serve",
        help="run the explanation server: gRPC, and HTTP with --http-address (default: the demo models on "
        "127.0.0.1:50051)",
        description=(
            "Serve smoothed-gradient explanations of the ONNX models of a repository folder over gRPC "
            "(mollify.v1.ExplainerService, grpc.health.v1, reflection). Every flag can also be given as "
            "the MOLLIFY_* environment variable shown in its help; a flag wins over its variable."
        ),
        epilog=(
            "SIGTERM/SIGINT: health NOT_SERVING for --drain-delay-s while still serving, then the listener "
            "closes and in-flight calls get --grace-period-s; SIGHUP: reload the model repository. Health "
            "checks need no token unless --auth-health is set. Exit codes: 0 stopped by a signal; 2 invalid "
            "settings or the address cannot be listened on (e.g. a port in use); errors print 'CODE: message'."
        ),
    )
    add_arguments(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    try:
        settings = Settings.from_sources(args)
    except SettingsError as err:
        print(f"SETTINGS: {err}", file=sys.stderr)
        return EXIT_SETTINGS
    configure_logging(settings.log_format, settings.log_level)
    # numpy's BLAS threads spin after every call and take cores from ONNX Runtime, which does the
    # real work; the service's own vector work is small. This process is the server alone.
    threadpool_limits(limits=1, user_api="blas")
    try:
        server, port = create_server(settings)
    except SettingsError as err:  # e.g. --providers naming a provider that does not load here
        print(f"SETTINGS: {err}", file=sys.stderr)
        return EXIT_SETTINGS
    except OSError as err:
        print(f"UNAVAILABLE: {err}", file=sys.stderr)
        return EXIT_SETTINGS
    except KeyboardInterrupt:
        print("CANCELLED: interrupted while loading the models", file=sys.stderr)
        return EXIT_INTERRUPTED
    server.start()
    _install_signal_handlers(server)
    ready = [m.name for m in server.repository.list_models() if m.ready]
    http = (
        f" (http {settings.http_address.rsplit(':', 1)[0]}:{server.http_port})"
        if settings.http_address
        else ""
    )
    print(
        f"listening on {settings.host}:{port}{http} ({len(ready)} models ready: {', '.join(ready)})",
        flush=True,
    )
    server.wait_for_termination()
    return EXIT_OK


def _install_signal_handlers(server: MollifyServer) -> None:
    if threading.current_thread() is not threading.main_thread():
        return  # signal handlers can only be set from the main thread (e.g. not in embedded use)
    settings = server.settings

    def stop(signum: int, frame: FrameType | None) -> None:
        # Returns at once; a second signal makes the stop under way skip its drain and grace.
        server.stop(settings.grace_period_s, drain_s=settings.drain_delay_s)

    def reload(signum: int, frame: FrameType | None) -> None:
        threading.Thread(target=server.reload_models, name="mollify-reload", daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    if hasattr(signal, "SIGHUP"):
        signal.signal(signal.SIGHUP, reload)
