"""`Loop.wakes`: the locks of waiting threads, released once the loop's round is over, never in its middle."""

from __future__ import annotations

import threading
import time

import pytest

from ppft_worker.runtime.loop import Loop

TIMEOUT = 10.0


@pytest.fixture
def loop():
    loop = Loop()
    yield loop
    loop.close()


def _held() -> threading.Lock:
    lock = threading.Lock()
    lock.acquire()
    return lock


def _waiter(lock: threading.Lock) -> tuple[threading.Thread, threading.Event]:
    """A thread asleep on `lock`, as a job's waiter is; the event is set once it got it."""
    woken = threading.Event()

    def wait() -> None:
        if lock.acquire(timeout=TIMEOUT):
            woken.set()

    thread = threading.Thread(target=wait, name="test-waiter", daemon=True)
    thread.start()
    return thread, woken


def test_a_lock_put_in_wakes_stays_held_for_the_rest_of_the_round(loop):
    lock = _held()
    seen: list[bool] = []
    loop.call_soon_threadsafe(lambda: loop.wakes.append(lock))
    loop.call_soon_threadsafe(lambda: seen.append(lock.locked()))  # later in the same round
    loop.run_once(0)
    assert seen == [True]


def test_the_waiters_in_wakes_are_woken_before_the_loop_blocks(loop):
    lock = _held()
    thread, woken = _waiter(lock)
    loop.call_soon_threadsafe(lambda: loop.wakes.append(lock))
    # The loop blocks in select for the whole timeout: the waiter must be awake well before it ends.
    runner = threading.Thread(target=loop.run_once, args=(TIMEOUT,), name="test-loop", daemon=True)
    runner.start()
    assert woken.wait(TIMEOUT / 2), "the waiter was not woken before the loop blocked"
    assert loop.wakes == []
    loop.wake()
    runner.join(TIMEOUT)
    thread.join(TIMEOUT)


def test_wakes_collected_by_run_here_are_released_before_it_returns(loop):
    thread = threading.Thread(target=loop.run_forever, name="test-loop", daemon=True)
    thread.start()
    try:
        lock = _held()
        deadline = time.monotonic() + TIMEOUT
        while not loop.run_here(lambda: loop.wakes.append(lock)):  # until it finds the loop asleep
            assert time.monotonic() < deadline, "run_here never found the loop asleep"
            time.sleep(0.001)
        assert not lock.locked()
        assert loop.wakes == []
    finally:
        loop.stop()
        thread.join(TIMEOUT)


def test_wakes_are_released_when_the_loop_fails(loop):
    lock = _held()

    def fail() -> None:
        loop.wakes.append(lock)
        raise KeyboardInterrupt  # the one failure a loop lets through (Ctrl-C on the loop's own thread)

    loop.call_soon_threadsafe(fail)
    with pytest.raises(KeyboardInterrupt):
        loop.run_once(0)
    assert not lock.locked()


def test_each_lock_in_wakes_is_released_once(loop):
    locks = [_held() for _ in range(5)]
    loop.call_soon_threadsafe(lambda: loop.wakes.extend(locks))
    loop.run_once(0)
    loop.run_once(0)  # a second release of any of them would raise RuntimeError here
    assert [lock.locked() for lock in locks] == [False] * 5
    assert loop.wakes == []
