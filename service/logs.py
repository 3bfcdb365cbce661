"""Structured logs: one JSON object (or one ``key=value`` line) per record, on stderr.

Fields passed with ``extra={...}`` (request id, model, status code, timings) become keys of the
record. Text is :func:`~service.echo.bounded` (message, each field, each traceback line), so a
request value of megabytes cannot flood the log. Only the ``mollify serve`` entry point calls
:func:`configure_logging`; library code just logs to ``logging.getLogger("mollify.service...")``.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any, TextIO

from service.echo import MESSAGE_LIMIT, bounded

__all__ = ["JsonFormatter", "KeyValueFormatter", "configure_logging"]

# Attributes every LogRecord has; anything else on a record came from ``extra``.
_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime", "taskName"}


def _bounded(value: Any) -> Any:
    """``value`` if a number or a short list/dict, else its text cut by :func:`~service.echo.bounded`."""
    if value is None or isinstance(value, bool | int | float):
        return value
    if isinstance(value, list | tuple | dict):
        text = json.dumps(value, default=str)
        return value if len(text) <= MESSAGE_LIMIT else bounded(text)
    return bounded(value if isinstance(value, str) else str(value))


def _fields(record: logging.LogRecord) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
        "level": record.levelname,
        "logger": record.name,
        "msg": _bounded(record.getMessage()),
    }
    fields.update({k: _bounded(v) for k, v in vars(record).items() if k not in _STANDARD})
    if record.exc_info:
        text = logging.Formatter().formatException(record.exc_info)
        fields["traceback"] = "\n".join(bounded(line) for line in text.splitlines())
    return fields


class JsonFormatter(logging.Formatter):
    """One JSON object per line."""

    def format(self, record: logging.LogRecord) -> str:
        return json.dumps(_fields(record), default=str)


class KeyValueFormatter(logging.Formatter):
    """``ts=... level=INFO msg="model ready" model=digits_cnn`` lines."""

    def format(self, record: logging.LogRecord) -> str:
        fields = _fields(record)
        traceback = fields.pop("traceback", None)
        line = " ".join(
            f"{k}={json.dumps(v, default=str) if ' ' in str(v) or not str(v) else v}"
            for k, v in fields.items()
        )
        return line + (f"\n{traceback}" if traceback else "")


def configure_logging(log_format: str = "json", level: str = "INFO", stream: TextIO | None = None) -> None:
    """Send the ``mollify`` loggers to ``stream`` (stderr) in ``log_format`` (``json`` or ``text``)."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter() if log_format == "json" else KeyValueFormatter())
    logger = logging.getLogger("mollify")
    logger.handlers[:] = [handler]
    logger.setLevel(level.upper())
    logger.propagate = False
