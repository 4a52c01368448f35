"""`Loop`: the one selector loop an I/O thread runs: file descriptors with callbacks, timers, a wake-up.

Every pipe and socket of a client (or of ppserver) belongs to one thread running one `Loop`, so a result, a
new submission and a dead worker are all noticed in one `select` call, with no thread per job, worker or
connection. Other threads talk to the loop only through `call_soon_threadsafe` and `wake`, which are cheap:
a wake-up byte is written only when the loop is actually asleep, so a burst of 100,000 `submit` calls costs
a handful of syscalls, not 100,000. And a thread whose work finds the loop asleep may do that work itself,
under the loop's lock (`run_here`): a lone `submit` then reaches its worker without waking the I/O thread,
which saves one thread switch (about 20 us here, a quarter of a round trip) on every sequential job.

It must never run user code (job callbacks run on their own thread) and never block except in `select`.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import os
import selectors
import threading
import time
from collections import deque
from collections.abc import Callable

__all__ = ["Loop", "Timer"]

log = logging.getLogger("ppft.loop")

Callback = Callable[[], None]


class Timer:
    """A callback due at a time; `cancel()` keeps it from running."""

    __slots__ = ("callback", "cancelled", "when")

    def __init__(self, when: float, callback: Callback) -> None:
        self.when = when
        self.callback = callback
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class Loop:
    """A selectors-based loop, run by exactly one thread (`run_once` / `run_forever`)."""

    def __init__(self) -> None:
        self._sel = selectors.DefaultSelector()
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        self._sel.register(self._wake_r, selectors.EVENT_READ, None)
        self._readers: dict[int, Callback] = {}
        self._writers: dict[int, Callback] = {}
        self._timers: list[tuple[float, int, Timer]] = []
        self._seq = itertools.count()
        self._soon: deque[Callback] = deque()
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

    # -- registration (loop thread only) ---------------------------------------------------------------

    def add_reader(self, fd: int, callback: Callback) -> None:
        self._readers[fd] = callback
        self._update(fd)

    def remove_reader(self, fd: int) -> None:
        if self._readers.pop(fd, None) is not None:
            self._update(fd)

    def add_writer(self, fd: int, callback: Callback) -> None:
        if fd not in self._writers:
            self._writers[fd] = callback
            self._update(fd)

    def remove_writer(self, fd: int) -> None:
        if self._writers.pop(fd, None) is not None:
            self._update(fd)

    def _update(self, fd: int) -> None:
        if self._closed:  # owners may unregister while tearing down after the loop was closed
            return
        events = (selectors.EVENT_READ if fd in self._readers else 0) | (
            selectors.EVENT_WRITE if fd in self._writers else 0
        )
        try:
            key = self._sel.get_key(fd)
        except KeyError:
            if events:
                self._sel.register(fd, events, fd)
            return
        if not events:
            self._sel.unregister(fd)
        elif key.events != events:
            self._sel.modify(fd, events, fd)

    def call_later(self, delay: float, callback: Callback) -> Timer:
        timer = Timer(time.monotonic() + delay, callback)
        heapq.heappush(self._timers, (timer.when, next(self._seq), timer))
        return timer

    # -- from any thread -------------------------------------------------------------------------------

    def call_soon_threadsafe(self, callback: Callback) -> None:
        self._soon.append(callback)
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

    def run_here(self, callback: Callback) -> bool:
        """Run `callback` now, on the calling thread, if the loop is asleep in `select`; else return False
        (the caller then `wake`s the loop, which runs its `on_idle`). Also False while callbacks handed to
        the loop (`call_soon_threadsafe`) wait to run: they run first, and on the loop's thread.

        While `callback` runs, the loop's thread cannot run anything: it takes the lock back before it
        handles what `select` returned. So `callback` may do whatever the loop's own callbacks do. It must be
        short: the loop's thread, if it woke meanwhile, waits for it."""
        if not self._sleeping or self._soon or not self._lock.acquire(blocking=False):
            return False
        try:
            if self._closed or self._soon:  # work handed to the loop's thread goes first, in order
                return False
            callback()
            timers = self._timers
            if timers and (self._sleep_until is None or timers[0][0] < self._sleep_until):
                self.wake()  # `callback` set a timer due before the loop planned to look again
        finally:
            self._lock.release()
        return True

    def stop(self) -> None:
        self._stopping = True
        self.wake()

    # -- running ---------------------------------------------------------------------------------------

    def run_forever(self) -> None:
        while not self._stopping:
            self.run_once()

    def run_once(self, max_timeout: float | None = None) -> None:
        lock = self._lock
        lock.acquire()
        try:
            self._run_once(lock, max_timeout)
        finally:
            lock.release()

    def _run_once(self, lock: threading.Lock, max_timeout: float | None) -> None:
        soon = self._soon
        while soon:
            soon.popleft()()
        self._dirty = False
        if self.on_idle is not None:
            self.on_idle()
        timeout = self._next_timeout(max_timeout)
        self._sleeping = True
        if soon or self._dirty or self._stopping:  # re-check after publishing _sleeping (see `wake`)
            timeout = 0.0
        self._sleep_until = None if timeout is None else time.monotonic() + timeout
        lock.release()
        try:
            ready = self._sel.select(timeout)
        finally:
            lock.acquire()
            self._sleeping = False
        for key, mask in ready:
            fd = key.data
            if fd is None:
                self._drain_wake()
                continue
            if mask & selectors.EVENT_WRITE:
                writer = self._writers.get(fd)
                if writer is not None:
                    writer()
            if mask & selectors.EVENT_READ:
                reader = self._readers.get(fd)
                if reader is not None:
                    reader()
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

    def _next_timeout(self, max_timeout: float | None) -> float | None:
        timers = self._timers
        while timers and timers[0][2].cancelled:
            heapq.heappop(timers)
        if not timers:
            return max_timeout
        delay = max(0.0, timers[0][0] - time.monotonic())
        return delay if max_timeout is None else min(delay, max_timeout)

    def _run_timers(self) -> None:
        timers = self._timers
        if not timers:
            return
        now = time.monotonic()
        while timers and timers[0][0] <= now:
            timer = heapq.heappop(timers)[2]
            if not timer.cancelled:
                timer.callback()

    def close(self) -> None:
        """Release the selector and the wake-up pipe; later (un)registrations are ignored. Idempotent."""
        if self._closed:
            return
        self._closed = True
        self._sel.close()
        for fd in (self._wake_r, self._wake_w):
            try:
                os.close(fd)
            except OSError:
                pass
