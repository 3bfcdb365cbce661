"""How the client sub-commands reach a server: the shared flags and the error translation.

``--server`` defaults to ``$MOLLIFY_SERVER``, else ``127.0.0.1:50051``; ``--token`` to
``$MOLLIFY_TOKEN`` (the variable ``mollify serve`` reads too), ``--token-file`` to
``$MOLLIFY_TOKEN_FILE``. The environment is read once, when the parser is built.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from service.cli.method_flags import with_flags
from service.cli.output import BadInputError, server_error
from service.client import DEFAULT_ADDRESS, ExplainerClient, MollifyError

SERVER_ENV = "MOLLIFY_SERVER"
TOKEN_ENV = "MOLLIFY_TOKEN"
TOKEN_FILE_ENV = "MOLLIFY_TOKEN_FILE"


def add_connection_arguments(parser: argparse.ArgumentParser) -> None:
    """Add ``--server``, ``--token``, ``--token-file``, ``--tls-ca`` and ``--timeout`` to ``parser``."""
    group = parser.add_argument_group("connection")
    group.add_argument(
        "--server",
        default=os.environ.get(SERVER_ENV) or DEFAULT_ADDRESS,
        metavar="HOST:PORT",
        help=f"the server's address (default: ${SERVER_ENV}, else {DEFAULT_ADDRESS})",
    )
    group.add_argument(
        "--token",
        default=os.environ.get(TOKEN_ENV),
        help=f"bearer token for a server started with one (default: ${TOKEN_ENV})",
    )
    group.add_argument(
        "--token-file",
        type=Path,
        default=os.environ.get(TOKEN_FILE_ENV),
        metavar="FILE",
        help=f"read the bearer token from FILE (default: ${TOKEN_FILE_ENV})",
    )
    group.add_argument(
        "--tls-ca",
        type=Path,
        metavar="PEM",
        help="root certificates to verify a TLS server with; given, the connection uses TLS",
    )
    group.add_argument(
        "--timeout",
        type=float,
        metavar="SECONDS",
        help="deadline of each call (default: none)",
    )


def open_client(args: argparse.Namespace) -> ExplainerClient:
    """An :class:`ExplainerClient` for the parsed connection flags (close it, or use ``with``)."""
    token = args.token
    if not token and args.token_file:
        try:
            token = Path(args.token_file).read_text().strip()
        except OSError as err:
            raise BadInputError(
                f"--token-file: cannot read {args.token_file}: {err.strerror or err}"
            ) from None
    if args.timeout is not None and args.timeout <= 0:
        raise BadInputError(f"--timeout: expected a number of seconds > 0, got {args.timeout}")
    if args.tls_ca is not None and not Path(args.tls_ca).is_file():
        raise BadInputError(f"--tls-ca: expected a PEM file, got {str(args.tls_ca)!r} (no such file)")
    return ExplainerClient(
        args.server, token=token or None, root_certificates=args.tls_ca, timeout=args.timeout
    )


@contextmanager
def server_errors(address: str) -> Iterator[None]:
    """Turn a :class:`MollifyError` raised inside the block into the CLI's error (exit 3 or 4)."""
    try:
        yield
    except MollifyError as err:
        message = with_flags(err.message) if err.code == "INVALID_ARGUMENT" else err.message
        if err.code == "UNAVAILABLE" and "connect" in message.lower():
            message = f"cannot reach the server at {address}: {message}"
        if err.request_id:
            message += f" (request id {err.request_id})"
        raise server_error(err.code, message) from None
