"""`Loop.run_here`: another thread may do the loop's work while the loop sleeps, never while it runs."""

from __future__ import annotations

import threading
import time

from ppft_worker.runtime.loop import Loop

TIMEOUT = 10.0


def _wait_asleep(loop: Loop) -> None:
    deadline = time.monotonic() + TIMEOUT
    while not loop._sleeping:  # the state run_here depends on
        assert time.monotonic() < deadline, "the loop never went to sleep"
        time.sleep(0.001)


def test_run_here_runs_on_the_calling_thread_when_the_loop_sleeps(running_loop):
    _wait_asleep(running_loop)
    ran_on: list[str] = []
    assert running_loop.run_here(lambda: ran_on.append(threading.current_thread().name)) is True
    assert ran_on == [threading.current_thread().name]


def test_run_here_refuses_while_a_handed_over_callback_waits(running_loop):
    _wait_asleep(running_loop)
    order: list[str] = []
    release = threading.Event()
    # Occupy the loop's thread, then queue a second callback behind it: run_here must not overtake it.
    running_loop.call_soon_threadsafe(lambda: release.wait(TIMEOUT))
    deadline = time.monotonic() + TIMEOUT
    while running_loop._sleeping:
        assert time.monotonic() < deadline
        time.sleep(0.001)
    running_loop.call_soon_threadsafe(lambda: order.append("handed over"))
    assert running_loop.run_here(lambda: order.append("here")) is False
    release.set()
    done = threading.Event()
    running_loop.call_soon_threadsafe(done.set)
    assert done.wait(TIMEOUT)
    assert order == ["handed over"]


def test_run_here_never_overlaps_the_loops_own_callbacks(running_loop):
    inside = threading.Lock()
    overlaps = 0
    calls = 0

    def critical() -> None:
        nonlocal overlaps, calls
        if not inside.acquire(blocking=False):
            overlaps += 1
            return
        try:
            calls += 1
            time.sleep(0)  # give the other side a chance to enter
        finally:
            inside.release()

    def hammer_from_the_loop(n: int) -> None:
        critical()
        if n:  # on a timer, so that the loop sleeps in between and run_here gets its turns too
            running_loop.call_later(0.0002, lambda: hammer_from_the_loop(n - 1))

    running_loop.call_soon_threadsafe(lambda: hammer_from_the_loop(300))
    here = 0
    deadline = time.monotonic() + TIMEOUT
    while calls - here < 300 and time.monotonic() < deadline:
        if running_loop.run_here(critical):
            here += 1
        time.sleep(0.0001)  # let the loop's thread have the GIL
    assert overlaps == 0
    assert calls - here >= 300, "the loop's own callbacks did not all run"
    assert here > 0, "run_here never found the loop asleep"


def test_a_timer_set_by_run_here_wakes_the_sleeping_loop(running_loop):
    _wait_asleep(running_loop)
    fired = threading.Event()
    assert running_loop.run_here(lambda: running_loop.call_later(0.01, fired.set)) is True
    assert fired.wait(TIMEOUT), "the loop slept through a timer set by run_here"
