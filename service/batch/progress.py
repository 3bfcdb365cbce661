"""A one-line progress bar of rows: done/total, rows per second and the time left (on a terminal only)."""

from __future__ import annotations

import math
import sys
import time
from typing import TextIO

__all__ = ["RowProgress", "format_duration"]


def format_duration(seconds: float) -> str:
    """``42s``, ``3m05s``, ``2h07m``; ``--`` when unknown."""
    if not math.isfinite(seconds) or seconds < 0:
        return "--"
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


class RowProgress:
    """Rows done of ``total``, the rate since the start (rows done in earlier runs excluded) and the ETA.

    Silent unless ``stream`` (stderr by default) is a terminal; redraws at most every ``interval_s``.
    """

    def __init__(
        self,
        total: int,
        already: int = 0,
        stream: TextIO | None = None,
        *,
        width: int = 24,
        interval_s: float = 0.2,
    ) -> None:
        self._stream = stream or sys.stderr
        self.enabled = bool(getattr(self._stream, "isatty", lambda: False)())
        self.total = total
        self.done = already
        self._already = already
        self._start = time.monotonic()
        self._last = 0.0
        self._width = width
        self._interval_s = interval_s

    def line(self) -> str:
        elapsed = time.monotonic() - self._start
        rate = (self.done - self._already) / elapsed if elapsed > 0 else 0.0
        left = (self.total - self.done) / rate if rate > 0 else math.inf
        fraction = self.done / self.total if self.total else 1.0
        filled = int(round(fraction * self._width))
        bar = "#" * filled + "-" * (self._width - filled)
        return f"explaining [{bar}] {self.done}/{self.total} rows, {rate:.1f} rows/s, ETA {format_duration(left)}"

    def advance(self, rows: int) -> None:
        self.done += rows
        if not self.enabled:
            return
        now = time.monotonic()
        if now - self._last < self._interval_s and self.done < self.total:
            return
        self._last = now
        self._stream.write("\r" + self.line() + "\x1b[K")
        self._stream.flush()

    def close(self) -> None:
        if self.enabled and self._last:
            self._stream.write("\n")
            self._stream.flush()
