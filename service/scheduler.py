"""Admission control: a bounded number of explanations computing at once and a bounded FIFO queue.

A request beyond both bounds is refused at once (:class:`OverloadedError`), so memory never grows
with load. A waiting request leaves the queue as soon as its :class:`Cancellation` fires (client
cancel, deadline or server shutdown), and a finished or failed one hands its slot straight to the oldest waiter.
Imports only the standard library.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from service.errors import OverloadedError, RequestCancelledError, ShuttingDownError

__all__ = ["Cancellation", "Scheduler"]


class Cancellation:
    """Whether a request should stop: its client went away, its deadline passed, it was cancelled,
    or the server cut it off at the end of its shutdown grace period.

    Args:
        is_active: returns false once the client cancelled or disconnected (gRPC's
            ``context.is_active``).
        deadline: ``time.monotonic()`` instant after which the work is useless; ``None`` for none.
        cut_off: set by the server when the shutdown grace period is over; the request then ends
            with :class:`ShuttingDownError` (UNAVAILABLE: retry elsewhere), not as a cancellation.
    """

    def __init__(
        self,
        is_active: Callable[[], bool] | None = None,
        deadline: float | None = None,
        cut_off: threading.Event | None = None,
    ) -> None:
        self._is_active = is_active
        self._deadline = deadline
        self._cut_off = cut_off
        self._cancelled = threading.Event()

    def cancel(self) -> None:
        self._cancelled.set()

    def deadline_passed(self) -> bool:
        return self._deadline is not None and time.monotonic() >= self._deadline

    def cut_off(self) -> bool:
        return self._cut_off is not None and self._cut_off.is_set()

    def should_stop(self) -> bool:
        return (
            self._cancelled.is_set()
            or self.cut_off()
            or self.deadline_passed()
            or (self._is_active is not None and not self._is_active())
        )

    def error(self, stage: str) -> ShuttingDownError | RequestCancelledError:
        """The error to raise when :meth:`should_stop` fired during ``stage`` (e.g. "queued")."""
        # The server cuts requests off before gRPC cancels their calls: that cause comes first.
        if self.cut_off():
            return ShuttingDownError(
                f"the server shut down while the request was {stage}: it did not finish within the shutdown "
                "grace period (server setting --grace-period-s / MOLLIFY_GRACE_PERIOD_S); retry against "
                "another replica or later"
            )
        if self.deadline_passed():
            return RequestCancelledError(
                f"the deadline passed while the request was {stage}", deadline_exceeded=True
            )
        return RequestCancelledError(
            f"the client cancelled the request while it was {stage}", deadline_exceeded=False
        )


class _Waiter:
    __slots__ = ("granted",)

    def __init__(self) -> None:
        self.granted = threading.Event()


class Scheduler:
    """Hands out computing slots.

    Args:
        max_concurrent: slots, i.e. explanations computing at once.
        max_queued: requests that may wait for a slot; one more is refused with :class:`OverloadedError`.
        on_change: called with ``(computing, queued)`` after every change, under no lock of the
            caller's; used for the queue-depth gauge.
        poll_interval_s: how often a waiter checks its cancellation.
    """

    def __init__(
        self,
        max_concurrent: int,
        max_queued: int,
        *,
        on_change: Callable[[int, int], None] | None = None,
        poll_interval_s: float = 0.02,
    ) -> None:
        self._max_concurrent = max_concurrent
        self._max_queued = max_queued
        self._on_change = on_change
        self._poll = poll_interval_s
        self._lock = threading.Lock()
        self._running = 0
        self._queue: deque[_Waiter] = deque()
        self._closed = False

    @property
    def computing(self) -> int:
        return self._running

    @property
    def queued(self) -> int:
        return len(self._queue)

    def close(self) -> None:
        """Refuse new requests (:class:`ShuttingDownError`); admitted and queued ones go on."""
        with self._lock:
            self._closed = True

    @contextmanager
    def slot(self, cancellation: Cancellation) -> Iterator[float]:
        """Hold a computing slot for the ``with`` block; yields the seconds spent queued.

        Raises:
            OverloadedError: every slot and queue place is taken.
            ShuttingDownError: :meth:`close` was called.
            RequestCancelledError: the cancellation fired while queued.
        """
        queued_s = self._acquire(cancellation)
        try:
            yield queued_s
        finally:
            self._release()

    def _acquire(self, cancellation: Cancellation) -> float:
        start = time.monotonic()
        with self._lock:
            if self._closed:
                raise ShuttingDownError("the server is shutting down and accepts no new explanations")
            if self._running < self._max_concurrent and not self._queue:
                self._running += 1
                waiter = None
            elif len(self._queue) >= self._max_queued:
                raise OverloadedError(
                    f"server busy: {self._running} explanations computing (--max-concurrent-requests "
                    f"{self._max_concurrent}) and {len(self._queue)} queued (--max-queued-requests "
                    f"{self._max_queued}); retry later"
                )
            else:
                waiter = _Waiter()
                self._queue.append(waiter)
        self._notify()
        if waiter is None:
            return 0.0
        while not waiter.granted.wait(self._poll):
            if cancellation.should_stop():
                with self._lock:
                    if not waiter.granted.is_set():
                        self._queue.remove(waiter)
                        waiter = None
                if waiter is None:
                    self._notify()
                    raise cancellation.error("queued")
                # The slot arrived together with the cancellation: give it on.
                self._release()
                raise cancellation.error("queued")
        if cancellation.should_stop():
            # Granted a slot freed by work that was cut off or cancelled, and stopped meanwhile itself.
            self._release()
            raise cancellation.error("queued")
        self._notify()
        return time.monotonic() - start

    def _release(self) -> None:
        with self._lock:
            if self._queue:
                # The slot passes straight to the oldest waiter; the running count is unchanged.
                self._queue.popleft().granted.set()
            else:
                self._running -= 1
        self._notify()

    def _notify(self) -> None:
        if self._on_change is not None:
            self._on_change(self._running, len(self._queue))
