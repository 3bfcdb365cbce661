"""Helpers the batch tests hand to worker processes and Ray actors (importable by path, or pickled by value)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from service.batch.sources import BlockSpec, RowBlock, Source


class CrashOnceSource(Source):
    """Wraps a source; the first worker to read block ``crash_block`` dies (``os._exit``) mid-job.

    A marker file records the crash, so the retried block reads normally.
    """

    def __init__(self, inner: Source, crash_block: int, marker: Path) -> None:
        self.inner = inner
        self.rows = inner.rows
        self.crash_block = crash_block
        self.marker = marker

    def plan(self, block_rows: int) -> list[BlockSpec]:
        return self.inner.plan(block_rows)

    def read(self, block: BlockSpec) -> RowBlock:
        if block.index == self.crash_block and not self.marker.exists():
            self.marker.write_text(str(os.getpid()))
            os._exit(1)
        return self.inner.read(block)

    def identity(self) -> dict[str, Any]:
        return self.inner.identity()
