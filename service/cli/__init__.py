"""The ``mollify`` command: one sub-command per module, each with ``register(subparsers)``.

A sub-command module defines ``register(subparsers: argparse._SubParsersAction[Any]) -> None``,
which adds its parser and sets ``func=run`` where ``run(args: argparse.Namespace) -> int``
returns the exit code. Failures print ``CODE: message`` to stderr and exit non-zero; a closed
stdout pipe (``| head``) ends quietly with 141, as for any tool SIGPIPE stops.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence
from typing import NoReturn

# Sub-command modules, in the order `mollify --help` lists them.
_COMMAND_MODULES: tuple[str, ...] = (
    "service.cli.serve_command",
    "service.cli.gradify_command",
    "service.cli.demo_command",
    "service.cli.models_command",
    "service.cli.health_command",
    "service.cli.explain_command",
    "service.cli.compare_command",
    "service.cli.batch_command",
)


class _UsageErrorParser(argparse.ArgumentParser):
    """Reports usage errors as ``USAGE: message`` (exit 2), like every other CLI failure.

    Sub-parsers are created with the parent's class, so one override covers every command.
    """

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"USAGE: {message} (see `{self.prog} --help`)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _UsageErrorParser(
        prog="mollify",
        description="Smoothed gradient explanations for any ONNX model.",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    subparsers.required = True
    for module_name in _COMMAND_MODULES:
        importlib.import_module(module_name).register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        code = int(args.func(args))
        sys.stdout.flush()  # here, not at interpreter exit, where a broken pipe could not be caught
        return code
    except BrokenPipeError:
        # The reader of stdout went away (``mollify ... | head``): stop quietly, like any tool.
        from service.cli.output import stdout_gone

        return stdout_gone()


if __name__ == "__main__":
    sys.exit(main())
