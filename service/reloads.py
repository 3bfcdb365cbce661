"""Admission of repository reloads: concurrent requests share one reload, reloads start at most
once per minimum interval, and callers beyond a few waiting ones are refused.

A reload rescans the repository and hashes every model's files; a client asking for reloads in a
loop would otherwise keep the CPU busy and slow every explanation down. A request never gets the
result of a reload that started before it (that scan may predate the caller's change to the
files): it waits for the next one, which starts once the running one has finished and at least
``min_interval_s`` after the previous start, and which every request arriving meanwhile shares.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Generic, TypeVar

from service.errors import OverloadedError

__all__ = ["MAX_RELOAD_WAITERS", "ReloadGate"]

MAX_RELOAD_WAITERS = 4
"""Most reload requests waiting at once; each holds a server thread, so more are refused."""

T = TypeVar("T")


class ReloadGate(Generic[T]):
    """Runs ``reload`` for the requests of :meth:`request`, coalesced and rate-limited.

    Args:
        reload: the reload itself (called on the thread of one of the waiting requests).
        min_interval_s: least time between the starts of two reloads, in seconds.
        max_waiters: most requests waiting at once (the running reload's callers included).
        clock: monotonic seconds (tests may inject one).
    """

    def __init__(
        self,
        reload: Callable[[], T],
        min_interval_s: float = 0.0,
        max_waiters: int = MAX_RELOAD_WAITERS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._reload = reload
        self.min_interval_s = min_interval_s
        self._max_waiters = max_waiters
        self._clock = clock
        self._changed = threading.Condition()
        self._started = 0  # reloads started so far
        self._finished = 0  # reloads finished so far
        self._running = False
        self._last_start = -float("inf")
        self._outcome: tuple[T | None, BaseException | None] = (None, None)
        self._waiters = 0
        self.runs = 0  # reloads really run (for observability)

    def request(self, *, may_refuse: bool = True) -> T:
        """Wait for a reload that starts after this call, and return its result.

        Args:
            may_refuse: whether this request may be refused when too many are waiting (in-process
                callers such as SIGHUP pass ``False``).

        Raises:
            OverloadedError: ``max_waiters`` requests are already waiting.
            Exception: whatever the shared reload raised.
        """
        with self._changed:
            if may_refuse and self._waiters >= self._max_waiters:
                raise OverloadedError(
                    f"ReloadModels: {self._waiters} reload requests are already waiting for the next reload; "
                    f"reloads start at most once per {self.min_interval_s:g} s "
                    "(--reload-min-interval-s / MOLLIFY_RELOAD_MIN_INTERVAL_S): retry later"
                )
            ticket = self._started + 1  # the first reload that starts from now on
            self._waiters += 1
            try:
                while self._finished < ticket:
                    if self._running or self._started >= ticket:
                        self._changed.wait()
                        continue
                    pause = self._last_start + self.min_interval_s - self._clock()
                    if pause > 0:
                        self._changed.wait(pause)
                        continue
                    self._run_locked()
                result, error = self._outcome
                if error is not None:
                    raise error
                return result  # type: ignore[return-value]
            finally:
                self._waiters -= 1

    def _run_locked(self) -> None:
        """Run one reload with the lock released; record its outcome and wake every waiter."""
        self._running = True
        self._started += 1
        self._last_start = self._clock()
        self.runs += 1
        outcome: tuple[T | None, BaseException | None]
        self._changed.release()
        try:
            outcome = (self._reload(), None)
        except BaseException as err:  # noqa: BLE001 - handed to every caller sharing this reload
            outcome = (None, err)
        finally:
            self._changed.acquire()
        self._outcome = outcome
        self._finished = self._started
        self._running = False
        self._changed.notify_all()
