"""Bounds on the untrusted text the service repeats back: in status messages and in log lines.

A request may carry a model name, kernel or tensor name of megabytes. Echoed whole, it would
overflow gRPC's metadata limit (the client then sees a misleading "metadata size exceeds limit"
instead of the real error) and fill the log. :func:`echo` quotes one value for a message at most
:data:`ECHO_LIMIT` characters long; :func:`bounded` is the safety net applied where messages
leave the service (status details, log fields), for values quoted without :func:`echo`.
"""

from __future__ import annotations

import re

__all__ = ["ECHO_LIMIT", "MESSAGE_LIMIT", "bounded", "echo"]

ECHO_LIMIT = 100
"""Most characters of one echoed value; longer ones end in ``…``."""

MESSAGE_LIMIT = 2000
"""Most characters of one status message or log field."""

_ELLIPSIS = "…"
_LONG_RUN = re.compile(rf"\S{{{ECHO_LIMIT + 1},}}")


def echo(value: object, limit: int = ECHO_LIMIT) -> str:
    """``repr(value)`` for a message, cut to its first ``limit`` characters plus ``…`` and the full length.

    ``echo("x" * 10**7)`` is ``'xxx…x'… (10000000 characters)``: the quotes show where the value
    was cut, the count what was sent.
    """
    if isinstance(value, str) and len(value) > limit:
        return f"{value[:limit]!r}{_ELLIPSIS} ({len(value)} characters)"
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + _ELLIPSIS


def bounded(text: str, limit: int = MESSAGE_LIMIT) -> str:
    """``text`` with every run of more than :data:`ECHO_LIMIT` non-space characters cut to that many
    plus ``…``, and at most ``limit`` characters in all (the end replaced by ``…``)."""
    if len(text) > ECHO_LIMIT:
        text = _LONG_RUN.sub(lambda run: run.group()[:ECHO_LIMIT] + _ELLIPSIS, text)
    return text if len(text) <= limit else text[: limit - 1] + _ELLIPSIS
