"""Data-parallel numpy work on a small shared thread pool.

numpy releases the GIL inside ufunc loops and random fills, so one large array operation split into
contiguous slices runs on several cores at once. Each slice does exactly the arithmetic the whole
operation would do on it, so results do not depend on the split. Work under
:data:`MIN_VALUES_PER_TASK` values per slice runs in the calling thread: a hand-off to another thread
costs tens of microseconds. Imports numpy only.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import os
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor

__all__ = [
    "MAX_WORKERS",
    "MIN_VALUES_PER_TASK",
    "default_worker_count",
    "for_each_slice",
    "slices",
    "thread_budget",
    "worker_count",
]

# Below this many array values a slice is not worth a thread hand-off.
MIN_VALUES_PER_TASK = 1 << 17
MAX_WORKERS = 8

_pool: ThreadPoolExecutor | None = None
_pool_lock = threading.Lock()
# The caller's thread budget (explain(threads=...), the server's setting); None: the default.
_budget: contextvars.ContextVar[int | None] = contextvars.ContextVar("mollify_thread_budget", default=None)


@functools.cache
def default_worker_count() -> int:
    """The CPUs this process may run on (when first asked), at most :data:`MAX_WORKERS`."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cpus = os.cpu_count() or 1
    return max(1, min(MAX_WORKERS, cpus))


def worker_count() -> int:
    """Threads data-parallel work may use now: the caller's budget (:func:`thread_budget`) if one
    is set in this context, else :func:`default_worker_count`."""
    budget = _budget.get()
    return default_worker_count() if budget is None else budget


@contextlib.contextmanager
def thread_budget(threads: int | None) -> Iterator[None]:
    """Within the block (and in work it hands to other threads with its context), data-parallel
    work uses at most ``threads`` threads, the calling one included (1 to :data:`MAX_WORKERS`);
    ``None`` leaves the current budget."""
    if threads is None:
        yield
        return
    token = _budget.set(max(1, min(MAX_WORKERS, int(threads))))
    try:
        yield
    finally:
        _budget.reset(token)


def _executor() -> ThreadPoolExecutor:
    global _pool
    with _pool_lock:
        if _pool is None:
            # Threads start only when tasks need them; budgets decide how many a call uses.
            _pool = ThreadPoolExecutor(MAX_WORKERS - 1, thread_name_prefix="mollify-numpy")
        return _pool


def slices(count: int, values_per_item: int, min_values: int = MIN_VALUES_PER_TASK) -> list[tuple[int, int]]:
    """Contiguous ``[start, stop)`` ranges covering ``range(count)``, one per task.

    As many tasks as there are workers, but no task with fewer than ``min_values`` values
    (``values_per_item`` per item); one range when the work is small.
    """
    if count <= 0:
        return []
    total = count * max(1, values_per_item)
    if total < 2 * min_values:
        return [(0, count)]
    tasks = max(1, min(worker_count(), count, total // max(1, min_values)))
    bounds = [count * i // tasks for i in range(tasks + 1)]
    return [(a, b) for a, b in zip(bounds[:-1], bounds[1:], strict=True) if b > a]


def for_each_slice(
    task: Callable[[int, int], None], count: int, values_per_item: int, min_values: int = MIN_VALUES_PER_TASK
) -> None:
    """Run ``task(start, stop)`` over :func:`slices` of ``range(count)``, in parallel when worth it.

    The calling thread runs the first slice itself. Every task finishes before this returns; the
    first exception raised by a task is raised here.
    """
    ranges = slices(count, values_per_item, min_values)
    if len(ranges) <= 1:
        for start, stop in ranges:
            task(start, stop)
        return
    pool = _executor()
    futures: list[Future[None]] = [pool.submit(task, a, b) for a, b in ranges[1:]]
    try:
        task(*ranges[0])
    finally:
        for future in futures:
            future.exception()  # wait for every task, even when one failed
    for future in futures:
        future.result()
