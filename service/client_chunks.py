"""Requests larger than the server's ``max-instances`` split into several calls, for the client.

The server refuses a request of more instances than its limit with ``RESOURCE_EXHAUSTED`` and a
message naming the limit ("inputs holds 100 instances; the limit is 64 (setting --max-instances
...)"). :func:`explain_in_chunks` and :func:`stream_in_chunks` send the whole batch first; on that
refusal they learn the limit (kept by the caller for later calls), and send the batch in chunks of
at most that many instances, with one seed for all of them, so the results are those one request
would have given: the server explains instance ``i`` of a request with the request's seed alone.
Results and progress events carry instance indices of the whole batch.

Extra graph inputs with a batch axis (rank of the model's graph input) are split with the batch;
those of one instance's shape are sent whole with every chunk.
"""

from __future__ import annotations

import dataclasses
import re
import secrets
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import numpy as np

from service.vocabulary import ExplainProgress, InstanceExplanation

__all__ = ["ChunkPlan", "explain_in_chunks", "instance_limit", "stream_in_chunks"]

_LIMIT = re.compile(r"inputs holds (\d+) instances; the limit is (\d+)")

Extra = Mapping[str, np.ndarray] | None
# (inputs, seed, extra inputs) -> results of one request
Call = Callable[[np.ndarray, "int | None", Extra], list[InstanceExplanation]]
StreamCall = Callable[
    [np.ndarray, "int | None", Extra], Iterator["ExplainProgress | list[InstanceExplanation]"]
]


def instance_limit(error: Exception) -> int | None:
    """The server's max-instances named by a ``RESOURCE_EXHAUSTED`` error, else ``None``."""
    if getattr(error, "code", None) != "RESOURCE_EXHAUSTED":
        return None
    match = _LIMIT.search(str(getattr(error, "message", error)))
    return int(match.group(2)) if match and int(match.group(2)) >= 1 else None


@dataclasses.dataclass
class ChunkPlan:
    """The learned limit of one server (``None`` until a refusal names it) and the ranks of the
    models' graph inputs (batch axis included), fetched when extra inputs must be split."""

    limit: int | None = None
    ranks: Callable[[], Mapping[str, int]] | None = None


def _parts(
    batch: np.ndarray, extra: Extra, limit: int, plan: ChunkPlan
) -> Iterator[tuple[int, np.ndarray, Extra]]:
    ranks = plan.ranks() if extra and plan.ranks is not None else {}
    for start in range(0, len(batch), limit):
        stop = min(start + limit, len(batch))
        part_extra = (
            None
            if extra is None
            else {
                name: (
                    value[start:stop]
                    if np.ndim(value) == ranks.get(name, -1) and len(value) == len(batch)
                    else value
                )
                for name, value in extra.items()
            }
        )
        yield start, batch[start:stop], part_extra


def _shifted(result: Any, start: int, total: int | None = None) -> Any:
    if isinstance(result, ExplainProgress):
        return dataclasses.replace(
            result,
            instance_index=result.instance_index + start,
            explanations_total=total if total is not None else result.explanations_total,
        )
    return dataclasses.replace(result, instance_index=result.instance_index + start)


def explain_in_chunks(
    call: Call,
    batch: np.ndarray,
    seed: int | None,
    extra: Extra,
    plan: ChunkPlan,
) -> list[InstanceExplanation]:
    """``call`` on the whole batch, or on chunks of at most the server's limit (see the module docstring)."""
    if plan.limit is None or len(batch) <= plan.limit:
        try:
            return call(batch, seed, extra)
        except Exception as err:
            limit = instance_limit(err)
            if limit is None or len(batch) <= limit:
                raise
            plan.limit = limit
    seed = secrets.randbits(63) if seed is None else seed
    results: list[InstanceExplanation] = []
    for start, part, part_extra in _parts(batch, extra, plan.limit, plan):
        results.extend(_shifted(r, start) for r in call(part, seed, part_extra))
    return results


def stream_in_chunks(
    call: StreamCall,
    batch: np.ndarray,
    seed: int | None,
    extra: Extra,
    plan: ChunkPlan,
) -> Iterator[ExplainProgress | list[InstanceExplanation]]:
    """Like :func:`explain_in_chunks` for a stream: progress events of every chunk (instance indices
    and totals of the whole batch), then all results in one list."""
    if plan.limit is None or len(batch) <= plan.limit:
        events = call(batch, seed, extra)
        try:
            first = next(events)
        except StopIteration:
            return
        except Exception as err:
            limit = instance_limit(err)
            if limit is None or len(batch) <= limit:
                raise
            plan.limit = limit
        else:
            yield first
            yield from events
            return
    seed = secrets.randbits(63) if seed is None else seed
    results: list[InstanceExplanation] = []
    for start, part, part_extra in _parts(batch, extra, plan.limit, plan):
        for event in call(part, seed, part_extra):
            if isinstance(event, list):
                results.extend(_shifted(r, start) for r in event)
            else:
                per_instance = max(1, event.explanations_total // max(1, len(part)))
                yield _shifted(event, start, per_instance * len(batch))
    yield results
