"""`Loop`: a callback that raises never ends the loop; its owner's error handler closes what it belongs to.

Each kind of registration (reader, writer, timer, `call_soon_threadsafe`, `run_here`, `on_idle`) is made to
raise once: the loop logs the failure once with its traceback, calls the owner's handler with the
exception, and goes on serving everything else.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time

import pytest
from looplib import TIMEOUT, on_loop

from ppft_worker.runtime import loop as loop_module
from ppft_worker.runtime.loop import Loop


class Boom(Exception):
    pass


def alive(loop: Loop) -> None:
    """The loop still runs handed-over work and timers."""
    ran = threading.Event()
    on_loop(loop, lambda: loop.call_later(0.001, ran.set))
    assert ran.wait(TIMEOUT), "the loop stopped running timers"
    assert loop.thread is not None and loop.thread.is_alive()


def tracebacks(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.exc_info and isinstance(r.exc_info[1], Boom)]


def raise_boom() -> None:
    raise Boom("injected")


def test_a_failing_reader_goes_to_its_owners_handler_and_the_loop_goes_on(running_loop, caplog):
    a, b = socket.socketpair()
    c, d = socket.socketpair()
    got: list[BaseException] = []
    handled = threading.Event()
    served = threading.Event()

    def failing() -> None:
        a.recv(100)
        raise Boom("reader")

    def handler(exc: BaseException) -> None:
        got.append(exc)
        running_loop.remove_reader(a.fileno())
        handled.set()

    on_loop(running_loop, lambda: running_loop.add_reader(a.fileno(), failing, handler))
    on_loop(running_loop, lambda: running_loop.add_reader(c.fileno(), lambda: (c.recv(100), served.set())))
    b.send(b"x")
    assert handled.wait(TIMEOUT)
    d.send(b"y")
    assert served.wait(TIMEOUT), "the other reader was not served after the failure"
    assert isinstance(got[0], Boom)
    assert len(tracebacks(caplog)) == 1
    assert "raised in the I/O thread" in caplog.text
    alive(running_loop)
    for s in (a, b, c, d):
        s.close()


def test_a_failing_reader_without_a_handler_is_unregistered(running_loop, caplog):
    a, b = socket.socketpair()
    calls = 0

    def failing() -> None:
        nonlocal calls
        calls += 1
        raise Boom("reader")

    on_loop(running_loop, lambda: running_loop.add_reader(a.fileno(), failing))
    b.send(b"x")  # never read: a registered reader would be called on every round
    deadline = time.monotonic() + TIMEOUT
    while a.fileno() in running_loop._readers:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    assert calls == 1
    alive(running_loop)
    a.close()
    b.close()


def test_a_failing_writer_goes_to_its_owners_handler(running_loop, caplog):
    a, b = socket.socketpair()
    handled = threading.Event()

    def handler(exc: BaseException) -> None:
        running_loop.remove_writer(a.fileno())
        handled.set()

    on_loop(running_loop, lambda: running_loop.add_writer(a.fileno(), raise_boom, handler))
    assert handled.wait(TIMEOUT)
    assert len(tracebacks(caplog)) == 1
    alive(running_loop)
    a.close()
    b.close()


def test_a_failing_timer_goes_to_its_handler_and_later_timers_run(running_loop, caplog):
    handled = threading.Event()
    later = threading.Event()

    def arm() -> None:
        running_loop.call_later(0.0, raise_boom, lambda exc: handled.set())
        running_loop.call_later(0.01, later.set)

    on_loop(running_loop, arm)
    assert handled.wait(TIMEOUT) and later.wait(TIMEOUT)
    assert len(tracebacks(caplog)) == 1


def test_a_failing_handed_over_callback_goes_to_its_handler_and_the_next_one_runs(running_loop, caplog):
    handled = threading.Event()
    after = threading.Event()
    running_loop.call_soon_threadsafe(raise_boom, lambda exc: handled.set())
    running_loop.call_soon_threadsafe(after.set)
    assert handled.wait(TIMEOUT) and after.wait(TIMEOUT)
    assert len(tracebacks(caplog)) == 1
    alive(running_loop)


def test_a_failing_run_here_is_handled_on_the_calling_thread(running_loop, caplog):
    deadline = time.monotonic() + TIMEOUT
    while not running_loop._sleeping:
        assert time.monotonic() < deadline
        time.sleep(0.001)
    got: list[BaseException] = []
    assert running_loop.run_here(raise_boom, got.append) is True
    assert isinstance(got[0], Boom)
    assert len(tracebacks(caplog)) == 1
    alive(running_loop)


def test_a_failing_idle_callback_goes_to_its_handler_and_the_loop_goes_on(running_loop, caplog):
    handled = threading.Event()
    fail = [True]

    def idle() -> None:
        if fail[0]:
            fail[0] = False
            raise Boom("idle")

    def install() -> None:
        running_loop.on_idle_error = lambda exc: handled.set()
        running_loop.on_idle = idle

    on_loop(running_loop, install)
    running_loop.wake()
    assert handled.wait(TIMEOUT)
    alive(running_loop)
    assert len(tracebacks(caplog)) == 1


def test_a_failing_handler_falls_back_to_unregistering_and_is_reported_too(running_loop, caplog):
    r, w = os.pipe()

    def broken_handler(exc: BaseException) -> None:
        raise ValueError("the handler is broken too")

    on_loop(running_loop, lambda: running_loop.add_reader(r, raise_boom, broken_handler))
    os.write(w, b"x")
    deadline = time.monotonic() + TIMEOUT
    while r in running_loop._readers:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    assert "the error handler" in caplog.text and "raised too" in caplog.text
    alive(running_loop)
    os.close(r)
    os.close(w)


def test_the_same_failure_repeating_is_logged_with_its_traceback_once_then_summed_up(
    running_loop, caplog, monkeypatch
):
    monkeypatch.setattr(loop_module, "REPORT_INTERVAL", 0.05)
    handled = threading.Semaphore(0)
    for _ in range(5):
        running_loop.call_soon_threadsafe(raise_boom, lambda exc: handled.release())
        assert handled.acquire(timeout=TIMEOUT)
    assert len(tracebacks(caplog)) == 1
    time.sleep(0.06)  # the summary interval (lowered above) passes: the next repeat is summed up
    running_loop.call_soon_threadsafe(raise_boom, lambda exc: handled.release())
    assert handled.acquire(timeout=TIMEOUT)
    assert "time(s) since it was logged with its traceback" in caplog.text
    assert len(tracebacks(caplog)) == 1


def test_keyboard_interrupt_is_not_swallowed():
    loop = Loop()
    try:

        def interrupt() -> None:
            raise KeyboardInterrupt

        loop.call_soon_threadsafe(interrupt, lambda exc: None)
        with pytest.raises(KeyboardInterrupt):
            loop.run_once(0)
    finally:
        loop.close()
