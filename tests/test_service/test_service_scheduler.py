"""service.scheduler: bounded slots and queue, FIFO hand-over, refusal beyond the bounds, and
cancellation that leaves the queue and frees slots."""

from __future__ import annotations

import threading
import time

import pytest

from service.errors import OverloadedError, RequestCancelledError, ShuttingDownError
from service.scheduler import Cancellation, Scheduler
from tests.support import wait_until


def _hold(
    scheduler: Scheduler,
    release: threading.Event,
    started: threading.Event | None = None,
    cancellation: Cancellation | None = None,
    log: list[str] | None = None,
    name: str = "",
) -> threading.Thread:
    def body() -> None:
        try:
            with scheduler.slot(cancellation or Cancellation()):
                if log is not None:
                    log.append(name)
                if started is not None:
                    started.set()
                release.wait(5)
        except (RequestCancelledError, OverloadedError):
            pass

    thread = threading.Thread(target=body, daemon=True)
    thread.start()
    return thread


def test_refuses_beyond_slots_and_queue_then_recovers() -> None:
    changes: list[tuple[int, int]] = []
    scheduler = Scheduler(1, 1, on_change=lambda c, q: changes.append((c, q)))
    release = threading.Event()
    holder = _hold(scheduler, release, started := threading.Event())
    started.wait(5)
    waiter = _hold(scheduler, release)
    wait_until(lambda: scheduler.queued == 1, 5, "the waiter to queue")
    with (
        pytest.raises(OverloadedError, match="--max-concurrent-requests 1.*--max-queued-requests 1"),
        scheduler.slot(Cancellation()),
    ):
        pass
    release.set()
    holder.join(5)
    waiter.join(5)
    assert (scheduler.computing, scheduler.queued) == (0, 0)
    assert (1, 1) in changes and changes[-1] == (0, 0)
    with scheduler.slot(Cancellation()) as queued_s:
        assert queued_s == 0.0


def test_waiters_are_served_first_in_first_out() -> None:
    scheduler = Scheduler(1, 5)
    release_first = threading.Event()
    started = threading.Event()
    first = _hold(scheduler, release_first, started)
    started.wait(5)
    log: list[str] = []
    release_rest = threading.Event()
    release_rest.set()
    threads = []
    for count, name in enumerate("abcd", start=1):
        threads.append(_hold(scheduler, release_rest, log=log, name=name))
        wait_until(lambda count=count: scheduler.queued == count, 5, f"waiter {name} to queue")
    release_first.set()
    for thread in [first, *threads]:
        thread.join(5)
    assert log == list("abcd")


def test_cancelled_waiter_leaves_the_queue() -> None:
    scheduler = Scheduler(1, 1)
    release = threading.Event()
    started = threading.Event()
    holder = _hold(scheduler, release, started)
    started.wait(5)
    cancellation = Cancellation()
    errors: list[BaseException] = []

    def wait() -> None:
        try:
            with scheduler.slot(cancellation):
                pass
        except RequestCancelledError as err:
            errors.append(err)

    waiter = threading.Thread(target=wait)
    waiter.start()
    wait_until(lambda: scheduler.queued == 1, 5, "the waiter to queue")
    cancellation.cancel()
    waiter.join(5)
    assert len(errors) == 1 and not errors[0].deadline_exceeded  # type: ignore[attr-defined]
    assert scheduler.queued == 0
    release.set()
    holder.join(5)
    assert scheduler.computing == 0


def test_deadline_while_queued_is_deadline_exceeded() -> None:
    scheduler = Scheduler(1, 1)
    release = threading.Event()
    started = threading.Event()
    holder = _hold(scheduler, release, started)
    started.wait(5)
    with (
        pytest.raises(RequestCancelledError, match="deadline") as caught,
        scheduler.slot(Cancellation(deadline=time.monotonic() + 0.05)),
    ):
        pass
    assert caught.value.deadline_exceeded
    release.set()
    holder.join(5)


def test_slot_is_freed_when_the_work_fails() -> None:
    scheduler = Scheduler(1, 0)
    with pytest.raises(ZeroDivisionError), scheduler.slot(Cancellation()):
        _ = 1 / 0
    assert scheduler.computing == 0
    with scheduler.slot(Cancellation()):
        assert scheduler.computing == 1


def test_closed_scheduler_refuses_new_work() -> None:
    scheduler = Scheduler(1, 1)
    scheduler.close()
    with pytest.raises(ShuttingDownError), scheduler.slot(Cancellation()):
        pass


def test_cancellation_sources() -> None:
    active = [True]
    cancellation = Cancellation(lambda: active[0], deadline=time.monotonic() + 60)
    assert not cancellation.should_stop()
    active[0] = False
    assert cancellation.should_stop()
    assert not cancellation.error("computing").deadline_exceeded
    expired = Cancellation(deadline=time.monotonic() - 1)
    assert expired.should_stop() and expired.error("computing").deadline_exceeded
