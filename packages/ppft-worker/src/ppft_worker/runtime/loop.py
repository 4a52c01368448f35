"""`Loop`: the one selector loop an I/O thread runs: file descriptors with callbacks, timers, a wake-up.

Every pipe and socket of a client (or of ppserver) belongs to one thread running one `Loop`, so a result, a
new submission and a dead worker are all noticed in one `select` call, with no thread per job, worker or
connection. Other threads talk to the loop only through `call_soon_threadsafe` and `wake`, which are cheap:
a wake-up byte is written only when the loop is actually asleep, so a burst of 100,000 `submit` calls costs
a handful of syscalls, not 100,000. And a thread whose work finds the loop asleep may do that work itself,
under the loop's lock (`run_here`): a lone `submit` then reaches its worker without waking the I/O thread,
which saves a switch to the I/O thread on every sequential job, a large share of one round trip
(`scripts/bench --only latency`).

Threads waiting for what the loop's callbacks finish (a job's result) are woken late, on purpose: a
callback puts the waiter's lock in `wakes` instead of releasing it, and the loop releases them all in one go
just before it blocks in `select` (or when a `run_here` callback returns, or the loop ends). A waiter woken
in the middle of a round may only wait again, for the GIL, which the loop's thread still holds: two more
futex calls and a thread switch each time it does (docs/performance.md, "A remote round trip, step by step").

It must never run user code (job callbacks run on their own thread) and never block except in `select`.

One failing callback never ends the loop. Each registration may name its owner's error handler
(`on_error`): when the callback raises, the failure is logged once with its traceback (`report`: a repeat of
the same failure is counted, and summed up in one line a minute at most), the handler closes what the
callback belongs to (a connection, a worker, a node, whose jobs then run elsewhere), and the loop goes on.
Without a handler, a failing file-descriptor callback is unregistered (its fd is left to its owner), and a
failing timer, handed-over or idle callback is only logged. The isolation costs the hot path nothing: a
`try` that raises nothing is free (zero-cost exceptions) and no callback is wrapped.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import os
import select
import selectors
import threading
import time
from collections import deque
from collections.abc import Callable

__all__ = ["ErrorHandler", "Loop", "Timer", "describe_callback"]

log = logging.getLogger("ppft.loop")

Callback = Callable[[], None]
ErrorHandler = Callable[[BaseException], None]
"""An owner's answer to one of its callbacks raising: close what the callback belongs to."""

REPORT_INTERVAL = 60.0
"""Seconds between two log lines about the same failure repeating (the first has the traceback)."""
_MAX_REPORTED = 256  # failures remembered for the de-duplication of the log

# What the loop asks of a descriptor and what its poll reports, in epoll's bits on every platform. An error or
# a hang-up (any other bit) is reported to both a reader and a writer, as `selectors` does.
_IN = 0x001  # select.EPOLLIN
_OUT = 0x004  # select.EPOLLOUT
_NOT_READ = ~_IN  # a writer's events: anything but "readable"
_NOT_WRITE = ~_OUT  # a reader's events: anything but "writable"


class _Poller:
    """The loop's descriptors in the kernel: epoll itself where there is one (Linux), whose `poll` the loop
    calls directly, a C call that returns (fd, events) pairs: `selectors.select`, a Python method that
    builds (key, events) pairs from them, cost each wake of every loop about 20 lines of Python
    (docs/performance.md, "A remote round trip, step by step"). Elsewhere a `selectors` selector, its
    events given in epoll's bits."""

    def __init__(self) -> None:
        self.events: dict[int, int] = {}  # fd -> what it is registered for (_IN, _OUT or both)
        epoll = getattr(select, "epoll", None)
        self._epoll = epoll() if epoll is not None else None
        self._sel = selectors.DefaultSelector() if self._epoll is None else None
        self.poll: Callable[[float | None], list[tuple[int, int]]] = (
            self._epoll.poll if self._epoll is not None else self._select
        )

    def _select(self, timeout: float | None) -> list[tuple[int, int]]:
        assert self._sel is not None
        return [
            (
                key.fd,
                (_IN if mask & selectors.EVENT_READ else 0) | (_OUT if mask & selectors.EVENT_WRITE else 0),
            )
            for key, mask in self._sel.select(timeout)
        ]

    def set(self, fd: int, events: int) -> None:
        """Register `fd` for `events` (0: unregister it; a closed fd's unregistration is no error)."""
        old = self.events.get(fd)
        if old == events or (old is None and not events):
            return
        epoll, sel = self._epoll, self._sel
        if not events:
            del self.events[fd]
            if epoll is not None:
                try:
                    epoll.unregister(fd)
                except OSError:
                    pass  # closed already: the kernel forgot it
            else:
                assert sel is not None
                sel.unregister(fd)
            return
        if epoll is not None:
            if old is None:
                epoll.register(fd, events)
            else:
                try:
                    epoll.modify(fd, events)
                except BaseException:
                    del self.events[fd]
                    raise
        else:
            assert sel is not None
            sel_events = (selectors.EVENT_READ if events & _IN else 0) | (
                selectors.EVENT_WRITE if events & _OUT else 0
            )
            if old is None:
                sel.register(fd, sel_events)
            else:
                sel.modify(fd, sel_events)
        self.events[fd] = events

    def close(self) -> None:
        if self._epoll is not None:
            self._epoll.close()
        else:
            assert self._sel is not None
            self._sel.close()


def describe_callback(callback: object) -> str:
    """A callback's name for a log line, with whom it serves when its object says (`peer` or `name`):
    `Stream._readable of ppserver 127.0.0.1:35000`, `WorkerPool._spawn.<locals>.<lambda>`."""
    func = getattr(callback, "func", callback)  # functools.partial
    name = str(getattr(func, "__qualname__", None) or type(func).__qualname__)
    owner = getattr(func, "__self__", None)
    whom = getattr(owner, "peer", None) or getattr(owner, "name", None)
    return f"{name} of {whom}" if isinstance(whom, str) and whom else name


class Timer:
    """A callback due at a time; `cancel()` keeps it from running."""

    __slots__ = ("callback", "cancelled", "on_error", "when")

    def __init__(self, when: float, callback: Callback, on_error: ErrorHandler | None = None) -> None:
        self.when = when
        self.callback = callback
        self.on_error = on_error
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class Loop:
    """An epoll (or selectors) loop, run by exactly one thread (`run_once` / `run_forever`)."""

    def __init__(self) -> None:
        self._sel = _Poller()
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        self._sel.set(self._wake_r, _IN)
        self._readers: dict[int, Callback] = {}
        self._writers: dict[int, Callback] = {}
        self._on_error: dict[int, ErrorHandler] = {}  # fd -> its owner's error handler
        self._timers: list[tuple[float, int, Timer]] = []
        self._seq = itertools.count()
        self._soon: deque[tuple[Callback, ErrorHandler | None]] = deque()
        self._reported: dict[tuple[str, str, int], list[float]] = {}  # failure -> [repeats, last logged]
        self._sleeping = False
        self._woken = False
        self._dirty = False
        self._stopping = False
        self._closed = False
        # Held by the loop's thread except while it waits in `select`: whoever holds it may run the loop's
        # callbacks (`run_here`). Uncontended but for those moments, so it costs the loop 4 lock operations a
        # round, never one per job.
        self._lock = threading.Lock()
        self._sleep_until: float | None = None  # when `select` returns at the latest (None: on events only)
        self.thread: threading.Thread | None = None
        self.on_idle: Callback | None = None  # run after every round of events (the dispatcher)
        self.on_idle_error: ErrorHandler | None = None  # `on_idle` raised (after the loop logged it)
        self.wakes: list[threading.Lock] = []
        """Locks of threads waiting for what this round finished, released (once each) before the loop
        blocks: appended to by the loop's callbacks only (on its thread, or under `run_here`)."""

    # -- registration (loop thread only) ---------------------------------------------------------------

    def add_reader(self, fd: int, callback: Callback, on_error: ErrorHandler | None = None) -> None:
        """Call `callback` whenever `fd` is readable; `on_error(exc)` if it raises (the fd's owner's
        handler: one per fd, kept until the fd has neither reader nor writer)."""
        self._readers[fd] = callback
        if on_error is not None:
            self._on_error[fd] = on_error
        self._update(fd)

    def remove_reader(self, fd: int) -> None:
        if self._readers.pop(fd, None) is not None:
            self._update(fd)

    def add_writer(self, fd: int, callback: Callback, on_error: ErrorHandler | None = None) -> None:
        """Call `callback` whenever `fd` is writable (a second call while registered changes nothing)."""
        if fd not in self._writers:
            self._writers[fd] = callback
            if on_error is not None:
                self._on_error[fd] = on_error
            self._update(fd)

    def remove_writer(self, fd: int) -> None:
        if self._writers.pop(fd, None) is not None:
            self._update(fd)

    def _update(self, fd: int) -> None:
        if self._closed:  # owners may unregister while tearing down after the loop was closed
            return
        events = (_IN if fd in self._readers else 0) | (_OUT if fd in self._writers else 0)
        if not events:
            self._on_error.pop(fd, None)
        self._sel.set(fd, events)

    def call_later(self, delay: float, callback: Callback, on_error: ErrorHandler | None = None) -> Timer:
        """Call `callback` in `delay` seconds; `on_error(exc)` if it raises."""
        timer = Timer(time.monotonic() + delay, callback, on_error)
        heapq.heappush(self._timers, (timer.when, next(self._seq), timer))
        return timer

    # -- from any thread -------------------------------------------------------------------------------

    def call_soon_threadsafe(self, callback: Callback, on_error: ErrorHandler | None = None) -> None:
        """Run `callback` on the loop's thread, soon, in the order handed over; `on_error(exc)` if it
        raises."""
        self._soon.append((callback, on_error))
        self.wake()

    def wake(self) -> None:
        """Make the loop run `on_idle` again soon; nearly free when the loop is busy.

        Publish the work first (append to a queue), then call this. The loop clears `_dirty` before it
        looks at the work and checks it again after it has published `_sleeping`, so either the loop sees
        the work or this call sees the loop asleep and writes the wake-up byte.
        """
        self._dirty = True
        if self._sleeping and not self._woken:
            self._woken = True
            try:
                os.write(self._wake_w, b"\0")
            except (BlockingIOError, OSError):
                pass

    def run_here(self, callback: Callback, on_error: ErrorHandler | None = None) -> bool:
        """Run `callback` now, on the calling thread, if the loop is asleep in `select`; else return False
        (the caller then `wake`s the loop, which runs its `on_idle`). Also False while callbacks handed to
        the loop (`call_soon_threadsafe`) wait to run: they run first, and on the loop's thread.

        While `callback` runs, the loop's thread cannot run anything: it takes the lock back before it
        handles what `select` returned. So `callback` may do whatever the loop's own callbacks do. It must be
        short: the loop's thread, if it woke meanwhile, waits for it. If it raises, the failure is handled
        as the loop handles its own callbacks' (logged, `on_error`), here, and True is returned."""
        if not self._sleeping or self._soon or not self._lock.acquire(blocking=False):
            return False
        try:
            if self._closed or self._soon:  # work handed to the loop's thread goes first, in order
                return False
            try:
                callback()
            except BaseException as exc:  # noqa: BLE001 - isolated as on the loop's thread
                self._callback_failed(exc, callback, on_error)
            timers = self._timers
            if timers and (self._sleep_until is None or timers[0][0] < self._sleep_until):
                self.wake()  # `callback` set a timer due before the loop planned to look again
        finally:
            if self.wakes:
                self.release_wakes()
            self._lock.release()
        return True

    def stop(self) -> None:
        self._stopping = True
        self.wake()

    # -- running ---------------------------------------------------------------------------------------

    def run_forever(self) -> None:
        lock = self._lock
        run = self._run_once
        while not self._stopping:  # `run_once`, inlined: a Python call less on every round
            lock.acquire()
            try:
                run(lock, None)
            except BaseException:
                self.release_wakes()  # the loop is failing: nobody may be left waiting for a release
                raise
            finally:
                lock.release()
        self.release_wakes()

    def run_once(self, max_timeout: float | None = None) -> None:
        lock = self._lock
        lock.acquire()
        try:
            self._run_once(lock, max_timeout)
        except BaseException:
            self.release_wakes()  # the loop is failing: nobody may be left waiting for a release
            raise
        finally:
            lock.release()

    def release_wakes(self) -> None:
        """Release the waiters' locks collected in `wakes` (the loop's thread, or under its lock)."""
        wakes = self.wakes
        while wakes:
            locks = wakes[:]
            wakes.clear()
            for lock in locks:
                lock.release()

    def _run_once(self, lock: threading.Lock, max_timeout: float | None) -> None:
        soon = self._soon
        while soon:
            callback, on_error = soon.popleft()
            try:
                callback()
            except BaseException as exc:  # noqa: BLE001 - one failing callback never ends the loop
                self._callback_failed(exc, callback, on_error)
        self._dirty = False
        on_idle = self.on_idle
        if on_idle is not None:
            try:
                on_idle()
            except BaseException as exc:  # noqa: BLE001 - one failing callback never ends the loop
                self._callback_failed(exc, on_idle, self.on_idle_error)
        timeout, until = self._next_timeout(max_timeout)
        self._sleeping = True
        if soon or self._dirty or self._stopping:  # re-check after publishing _sleeping (see `wake`)
            timeout, until = 0.0, 0.0
        self._sleep_until = until
        if self.wakes:  # wake the waiters now, as the loop lets go of the GIL: nothing left to contend for
            self.release_wakes()
        lock.release()
        try:
            ready = self._sel.poll(timeout)
        finally:
            lock.acquire()
            self._sleeping = False
        for fd, mask in ready:
            if fd == self._wake_r:
                self._drain_wake()
                continue
            # A callback of this round may have unregistered `fd` (or the other half of it): looked up anew.
            handler: Callback | None = None
            try:
                if mask & _NOT_READ:
                    handler = self._writers.get(fd)
                    if handler is not None:
                        handler()
                if mask & _NOT_WRITE:
                    handler = self._readers.get(fd)
                    if handler is not None:
                        handler()
            except BaseException as exc:  # noqa: BLE001 - one failing callback never ends the loop
                self._fd_failed(fd, exc, handler)
        timers = self._timers
        if timers and timers[0][0] <= time.monotonic():  # most rounds have no timer due: no call for them
            self._run_timers()

    def _drain_wake(self) -> None:
        self._woken = False
        try:
            # One read empties the pipe (it holds a byte per wake-up, rarely more than one): a second read
            # would only fail with EAGAIN, a syscall and an exception on every wake-up of the loop.
            while len(os.read(self._wake_r, 4096)) == 4096:
                pass
        except (BlockingIOError, OSError):
            pass

    def _next_timeout(self, max_timeout: float | None) -> tuple[float | None, float | None]:
        """(the `select` timeout, the time it ends at): the due time of the next timer itself when that
        timer decides, so that `run_here` compares a new timer with it exactly, not with a sum that a
        rounding or a later clock reading puts after it (and wakes the loop for nothing)."""
        timers = self._timers
        while timers and timers[0][2].cancelled:
            heapq.heappop(timers)
        if not timers:
            if max_timeout is None:
                return None, None
            return max_timeout, time.monotonic() + max_timeout
        when = timers[0][0]
        now = time.monotonic()
        delay = max(0.0, when - now)
        if max_timeout is not None and max_timeout < delay:
            return max_timeout, now + max_timeout
        return delay, when

    def _run_timers(self) -> None:
        timers = self._timers
        if not timers:
            return
        now = time.monotonic()
        while timers and timers[0][0] <= now:
            timer = heapq.heappop(timers)[2]
            if not timer.cancelled:
                try:
                    timer.callback()
                except BaseException as exc:  # noqa: BLE001 - one failing callback never ends the loop
                    self._callback_failed(exc, timer.callback, timer.on_error)

    # -- failures --------------------------------------------------------------------------------------

    def _fd_failed(self, fd: int, exc: BaseException, callback: object) -> None:
        """A reader or writer of `fd` raised: its owner's handler closes what it belongs to; without one
        (or if the handler fails too), the fd is unregistered so that it cannot fail on every round."""
        handler = self._on_error.get(fd)
        if not self._callback_failed(exc, callback, handler):
            self.remove_reader(fd)
            self.remove_writer(fd)

    def _callback_failed(self, exc: BaseException, callback: object, handler: ErrorHandler | None) -> bool:
        """Log the failure (once), then hand it to `handler`; True if the handler took care of it."""
        if isinstance(exc, KeyboardInterrupt):
            raise exc  # Ctrl-C in a loop run by the main thread: the program's, not a callback's failure
        what = describe_callback(callback)
        if handler is None:
            self.report(exc, f"{what} raised in the I/O thread; ignored, the loop goes on")
            return False
        self.report(exc, f"{what} raised in the I/O thread; what it belongs to is closed, the loop goes on")
        try:
            handler(exc)
        except BaseException as again:
            if isinstance(again, KeyboardInterrupt):
                raise
            self.report(again, f"the error handler {describe_callback(handler)} raised too")
            return False
        return True

    def report(self, exc: BaseException, what: str) -> None:
        """Log that `what` failed with `exc`: the first time with the traceback; when the same failure (its
        type, and the line that raised it) repeats, one line per `REPORT_INTERVAL` with the count."""
        try:
            tb = exc.__traceback__
            while tb is not None and tb.tb_next is not None:
                tb = tb.tb_next
            where = (tb.tb_frame.f_code.co_filename, tb.tb_lineno) if tb is not None else ("", 0)
            key = (type(exc).__qualname__, *where)
            now = time.monotonic()
            seen = self._reported.get(key)
            if seen is None:
                if len(self._reported) >= _MAX_REPORTED:
                    self._reported.clear()
                self._reported[key] = [0.0, now]
                log.error("%s: %s", what, _exc_text(exc), exc_info=exc)
                return
            seen[0] += 1
            if now - seen[1] >= REPORT_INTERVAL:
                log.error("%s: %s (%d time(s) since it was logged with its traceback)", what, _exc_text(exc),
                          int(seen[0]))  # fmt: skip
                seen[0] = 0.0
                seen[1] = now
        except Exception:  # noqa: BLE001 - reporting must not fail in turn
            log.error("%s (the failure could not be described)", what)

    def close(self) -> None:
        """Release the selector and the wake-up pipe; later (un)registrations are ignored. Idempotent."""
        if self._closed:
            return
        self._closed = True
        self.release_wakes()
        self._sel.close()
        for fd in (self._wake_r, self._wake_w):
            try:
                os.close(fd)
            except OSError:
                pass


def _exc_text(exc: BaseException) -> str:
    try:
        text = str(exc)
    except Exception:  # noqa: BLE001 - a broken __str__ must not hide the failure itself
        text = "<str() failed>"
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
