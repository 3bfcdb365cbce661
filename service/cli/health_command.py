"""``mollify health``: ask the server (or one model) whether it is serving.

Prints the status; exits 0 when it is ``SERVING`` and 3 otherwise (4 when nobody answers).
"""

from __future__ import annotations

import argparse
from typing import Any

from service.cli.connection import add_connection_arguments, open_client, server_errors
from service.cli.output import EXIT_CODES_HELP, EXIT_OK, CliError, dumps, guarded, server_error


def register(subparsers: argparse._SubParsersAction[Any]) -> None:
    parser = subparsers.add_parser(
        "health",
        help="check that the server (or one model) is serving",
        description="Query the standard gRPC health service. Exit 0 when SERVING.",
        epilog=EXIT_CODES_HELP,
    )
    parser.add_argument(
        "service",
        nargs="?",
        default="",
        help="a model name, or mollify.v1.ExplainerService (default: the whole server)",
    )
    parser.add_argument("--json", action="store_true", help="print a machine-readable JSON document")
    add_connection_arguments(parser)
    parser.set_defaults(func=run)


@guarded
def run(args: argparse.Namespace) -> int:
    try:
        with open_client(args) as client, server_errors(client.address):
            status = client.health(args.service)
    except CliError as error:
        if error.code == "NOT_FOUND":
            # The health service answers an unknown name with a bare status and no message.
            raise server_error(
                "NOT_FOUND", f"the server at {args.server} knows no service or model {args.service!r}"
            ) from None
        raise
    what = f"{args.service!r} at {args.server}" if args.service else f"the server at {args.server}"
    if args.json:
        print(dumps({"server": args.server, "service": args.service, "status": status}))
    elif status == "SERVING":
        print(f"{status}: {what}")
    if status != "SERVING":
        raise server_error(status, f"{what} is not serving")
    return EXIT_OK
