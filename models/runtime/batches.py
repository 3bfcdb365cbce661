"""Running a graph on a batch of any size: all rows at once, or ``size`` rows per call for a model
whose batch is fixed (the last call padded). Pure numpy over anything with ``run(names, feed)``."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Protocol

import numpy as np

__all__ = ["Runner", "run_in_batches"]


class Runner(Protocol):
    """Anything that runs a graph: ``run(output names, feed) → one array per name``."""

    def run(self, names: Sequence[str], feed: Mapping[str, np.ndarray]) -> list[np.ndarray]: ...


def run_in_batches(
    session: Runner,
    names: Sequence[str],
    feed: Mapping[str, np.ndarray],
    batched: Sequence[str],
    size: int | None,
    zero_padded: Sequence[str] | None = None,
) -> list[np.ndarray]:
    """Run ``session`` on ``feed``, ``size`` rows of the ``batched`` inputs per call (all at once if ``None``).

    A model with a fixed batch takes exactly ``size`` rows: the last call is padded (the inputs
    with copies of their last row, so the padding is valid data; those in ``zero_padded``, default
    every batched input after the first (the cotangent), with zeros) and the padded rows' results
    are dropped. Every output must have the batch as its first dimension.
    """
    zeros = set(batched[1:] if zero_padded is None else zero_padded)
    rows = int(feed[batched[0]].shape[0])
    if size is None or rows == size:
        return [np.asarray(value) for value in session.run(list(names), dict(feed))]
    parts: list[list[np.ndarray]] = [[] for _ in names]
    for start in range(0, rows, size):
        stop = min(start + size, rows)
        call = dict(feed)
        for name in batched:
            block = feed[name][start:stop]
            if stop - start < size:
                # Padding rows: the input repeats the last real row (valid data), the cotangent is zero.
                fill = np.repeat(block[-1:], size - (stop - start), axis=0)
                if name in zeros:
                    fill = np.zeros_like(fill)
                block = np.concatenate([block, fill])
            call[name] = np.ascontiguousarray(block)
        for index, value in enumerate(session.run(list(names), call)):
            parts[index].append(np.asarray(value)[: stop - start])
    return [np.concatenate(chunks) for chunks in parts]
