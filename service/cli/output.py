"""What the CLI writes to the terminal: typed failures with exit codes, progress, JSON, tables.

Every failure of a sub-command is a :class:`CliError`; :func:`fail` prints it as ``CODE: message``
on stderr and returns its exit code. Exit codes (documented in ``mollify --help`` and the README):

====  ==========================================================================================
code  meaning
====  ==========================================================================================
0     success
1     unexpected internal error of the CLI itself (a bug: please report it)
2     usage error or bad local input (unknown flag value, missing or unreadable input file,
      input of the wrong shape, unwritable output folder)
3     the server answered with an error status (unknown model, invalid request, limit exceeded, ...)
4     the server is unreachable or unavailable (nothing listens at ``--server``; retry later)
141   the reader of stdout went away (``mollify explain --json | head``): the CLI stops quietly,
      like any tool a broken pipe stops (128 + SIGPIPE)
====  ==========================================================================================

Imports only the standard library and numpy.
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import os
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from typing import Any, TextIO

import numpy as np

EXIT_OK = 0
EXIT_INTERNAL = 1
EXIT_USAGE = 2
EXIT_SERVER = 3
EXIT_UNREACHABLE = 4
EXIT_BROKEN_PIPE = 128 + 13  # what a shell reports for a process a broken pipe (SIGPIPE) stopped

EXIT_CODES_HELP = (
    "exit codes: 0 success; 2 usage error or bad local input; 3 the server answered with an error "
    "status; 4 the server is unreachable or unavailable; 141 stdout was closed early (| head). "
    "Errors print 'CODE: message' to stderr."
)

# gRPC status names that mean "nobody answered" rather than "the server said no".
_UNREACHABLE_CODES = frozenset({"UNAVAILABLE"})


class CliError(Exception):
    """A failure the CLI reports as ``CODE: message`` and exits with ``exit_code``."""

    def __init__(self, code: str, message: str, exit_code: int) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.exit_code = exit_code


class UsageError(CliError):
    """A flag value the CLI cannot use (exit code 2)."""

    def __init__(self, message: str) -> None:
        super().__init__("USAGE", message, EXIT_USAGE)


class BadInputError(CliError):
    """A local input file is missing, unreadable, or does not fit the model (exit code 2)."""

    def __init__(self, message: str) -> None:
        super().__init__("BAD_INPUT", message, EXIT_USAGE)


class OutputError(CliError):
    """An output file or folder cannot be written (exit code 2)."""

    def __init__(self, message: str) -> None:
        super().__init__("OUTPUT_ERROR", message, EXIT_USAGE)


def server_error(code: str, message: str) -> CliError:
    """A :class:`CliError` for a gRPC status: exit 4 when unreachable, else 3."""
    exit_code = EXIT_UNREACHABLE if code in _UNREACHABLE_CODES else EXIT_SERVER
    return CliError(code, message, exit_code)


def fail(error: CliError, stream: TextIO | None = None) -> int:
    """Print ``CODE: message`` to ``stream`` (stderr by default) and return the exit code."""
    print(f"{error.code}: {error.message}", file=stream or sys.stderr)
    return error.exit_code


def stdout_gone() -> int:
    """The reader of stdout went away (``| head``): stop quietly and return :data:`EXIT_BROKEN_PIPE`.

    Standard output is pointed at the null device first, so that the interpreter's final flush of
    what is still buffered does not fail a second time ("Exception ignored ... BrokenPipeError").
    """
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):  # stdout has no file descriptor (embedded use): nothing to flush later
        pass
    return EXIT_BROKEN_PIPE


def guarded(run: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """Wrap a sub-command's ``run`` so every failure ends as ``CODE: message`` and an exit code.

    A :class:`CliError` prints its code; Ctrl-C prints ``CANCELLED`` (exit 130); a closed stdout
    pipe stops quietly (:func:`stdout_gone`); anything else is a bug of the CLI: its traceback
    goes to stderr, then ``INTERNAL: ...`` (exit 1).
    """

    @functools.wraps(run)
    def wrapper(args: argparse.Namespace) -> int:
        try:
            return run(args)
        except CliError as error:
            return fail(error)
        except KeyboardInterrupt:
            print("CANCELLED: interrupted", file=sys.stderr)
            return 130
        except BrokenPipeError:
            return stdout_gone()
        except Exception as error:  # noqa: BLE001 - the last line of defence of a command-line tool
            traceback.print_exc(file=sys.stderr)
            print(f"INTERNAL: {type(error).__name__}: {error}", file=sys.stderr)
            return EXIT_INTERNAL

    return wrapper


def to_jsonable(value: Any) -> Any:
    """``value`` with numpy scalars/arrays, tuples and non-finite floats made JSON-safe."""
    if isinstance(value, dict):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [to_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return to_jsonable(value.tolist())
    if isinstance(value, np.generic):
        return to_jsonable(value.item())
    if isinstance(value, float) and not math.isfinite(value):
        # JSON has no NaN/Infinity; null keeps the document parseable by every reader.
        return None
    return value


def dumps(value: Any) -> str:
    """Indented JSON text of ``value`` (see :func:`to_jsonable`)."""
    return json.dumps(to_jsonable(value), indent=2, ensure_ascii=False)


def format_table(headers: Sequence[str], rows: Sequence[Sequence[Any]], align: str = "") -> str:
    """A plain-text table; ``align`` gives ``l``/``r`` per column (default: left)."""
    cells = [[str(c) for c in headers]] + [[str(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    lines = []
    for index, row in enumerate(cells):
        parts = []
        for i, cell in enumerate(row):
            right = i < len(align) and align[i] == "r"
            parts.append(cell.rjust(widths[i]) if right else cell.ljust(widths[i]))
        lines.append("  ".join(parts).rstrip())
        if index == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


class ProgressBar:
    """A one-line progress bar (samples done, current relative error) on a terminal; silent otherwise.

    Redraws at most every ``interval_s`` seconds so a fast stream does not flood the terminal.
    """

    def __init__(self, label: str, stream: TextIO | None = None, *, width: int = 28, interval_s: float = 0.1):
        self._stream = stream or sys.stderr
        self._enabled = bool(getattr(self._stream, "isatty", lambda: False)())
        self.label = label
        self._width = width
        self._interval_s = interval_s
        self._last_draw = 0.0
        self._drawn = False

    @property
    def enabled(self) -> bool:
        return self._enabled

    def update(self, done: int, planned: int, relative_error: float, *, force: bool = False) -> None:
        """Show ``done`` of ``planned`` draws and ``‖SE‖/‖mean‖`` (a fraction, shown in percent)."""
        if not self._enabled:
            return
        now = time.monotonic()
        if not force and now - self._last_draw < self._interval_s:
            return
        self._last_draw = now
        fraction = min(1.0, done / planned) if planned > 0 else 1.0
        filled = int(round(fraction * self._width))
        bar = "#" * filled + "-" * (self._width - filled)
        error = f"{100 * relative_error:6.2f}%" if math.isfinite(relative_error) else "   n/a"
        self._stream.write(f"\r{self.label} [{bar}] {done}/{planned} samples, rel. error {error}\x1b[K")
        self._stream.flush()
        self._drawn = True

    def close(self) -> None:
        """End the line so later output starts on a fresh one."""
        if self._enabled and self._drawn:
            self._stream.write("\n")
            self._stream.flush()
            self._drawn = False
