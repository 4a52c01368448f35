"""The door of a ppserver: accepting, capping connections in their handshake, logs a flood cannot swell.

    accept --> HandshakeGate.admit(conn): over the cap (in all, or from its address)? drop a waiting one:
               first one that has sent nothing yet (read first: its bytes may have just arrived), oldest
               first; else the oldest of them all
    Established / closed --> HandshakeGate.leave(conn)

A connection costs a file descriptor and a few KiB until its peer has proven the secret, and nothing stops a
stranger from opening thousands, so the ones still in their handshake are capped, in all and per source
address, as OpenSSH's MaxStartups does. A real client sends its opening and Hello the moment it connects and
finishes within two round trips; a flood's idle connections never send a byte: dropping those first, and the
oldest first, keeps a real client's handshake alive through a replenished flood.

`Door` accepts. When the process runs out of file descriptors (EMFILE, ENFILE) it first drops a connection
that idles in its handshake, to let the next one in; with none to drop, it stops accepting for a moment
(0.05 s doubling to 1 s) instead of being woken at once by the same failure, over and over.

`LogBudget` keeps a flood from writing the log: a few lines per interval, then one line with the counts.
The gate never reads or closes a connection itself: the `Waiting` connections it is given do that.
"""

from __future__ import annotations

import errno
import logging
import socket
import time
from collections import Counter
from collections.abc import Callable, Sized
from typing import Protocol, TypeVar

from ppft_worker.runtime import Loop, Timer

__all__ = [
    "DEFAULT_MAX_HANDSHAKES",
    "DEFAULT_MAX_HANDSHAKES_PER_HOST",
    "Door",
    "HandshakeGate",
    "LogBudget",
    "Waiting",
]

log = logging.getLogger("ppft.server")

_OUT_OF_FILES = frozenset((errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM))

DEFAULT_MAX_HANDSHAKES = 100
"""Connections in their handshake at once, from everywhere (`ppserver --max-handshakes`)."""

DEFAULT_MAX_HANDSHAKES_PER_HOST = 20
"""Connections in their handshake at once from one address (`ppserver --max-handshakes-per-host`)."""


class Waiting(Protocol):
    """A connection in its handshake, as the gate sees it."""

    host: str

    def progress(self) -> int:
        """How far its handshake went: 0 while nothing was received, more as it advances."""
        ...

    def poll(self) -> bool:
        """Read what its peer sent so far; whether it is still in its handshake after that."""
        ...

    def drop(self) -> None:
        """Close it now, quietly (the gate counts it); the owner then calls `leave`."""
        ...


W = TypeVar("W", bound=Waiting)


class LogBudget:
    """At most `burst` lines per `interval` seconds through `log`; what is held back is counted by reason and
    summed up in one line at the end of the interval."""

    def __init__(
        self, loop: Loop, log: Callable[[str], None], *, what: str, burst: int = 5, interval: float = 10.0
    ) -> None:
        self._loop = loop
        self._log = log
        self._what = what  # "connection(s) refused", as in "37 more connection(s) refused"
        self._burst = burst
        self._interval = interval
        self._start = -interval
        self._logged = 0
        self._held: Counter[str] = Counter()
        self._timer: Timer | None = None
        self.on_note: Callable[[str, str], None] | None = (
            None  # told (reason, line) of every note, logged or not
        )

    def note(self, line: str, reason: str) -> None:
        """Log `line`, unless this interval's lines are spent: then count it under `reason`."""
        if self.on_note is not None:
            self.on_note(reason, line)
        now = time.monotonic()
        if now - self._start >= self._interval and self._timer is None:
            self._start = now
            self._logged = 0
        if self._logged < self._burst:
            self._logged += 1
            self._log(line)
            return
        self._held[reason] += 1
        if self._timer is None:
            self._timer = self._loop.call_later(self._start + self._interval - now, self._summary)

    def _summary(self) -> None:
        self._timer = None
        held, self._held = self._held, Counter()
        total = sum(held.values())
        if total:
            reasons = ", ".join(f"{n} x {reason}" for reason, n in held.most_common(3))
            more = "" if len(held) <= 3 else f", {total - sum(n for _, n in held.most_common(3))} other"
            self._log(
                f"{total} more {self._what} in the last {self._interval:.0f} s, not logged one by one "
                f"({reasons}{more})"
            )
        self._start = time.monotonic()
        self._logged = 0

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None


class HandshakeGate:
    """The connections still in their handshake, held to `limit` in all and `per_host` per address."""

    def __init__(self, limit: int, per_host: int, budget: LogBudget) -> None:
        self.limit = limit
        self.per_host = per_host
        self.dropped = 0  # connections dropped to stay within the caps, since the start
        self._waiting: dict[Waiting, None] = {}  # in the order they arrived
        self._hosts: Counter[str] = Counter()
        self._budget = budget

    def __len__(self) -> int:
        return len(self._waiting)

    def __contains__(self, conn: object) -> bool:
        return conn in self._waiting

    def admit(self, conn: Waiting) -> None:
        """A new connection: make room for it by dropping others if it takes its address, or everyone, over
        the cap (the new one is never dropped here: it has not had its chance yet)."""
        host = conn.host
        self._waiting[conn] = None
        self._hosts[host] += 1
        if self._hosts[host] > self.per_host:
            self._make_room(lambda other: other.host == host, conn, f"{self.per_host} from {host}")
        if len(self._waiting) > self.limit:
            self._make_room(None, conn, f"{self.limit} in all")

    def leave(self, conn: Waiting) -> None:
        """`conn` finished its handshake, or closed: it no longer counts."""
        if self._waiting.pop(conn, 0) is None:
            host = conn.host
            self._hosts[host] -= 1
            if not self._hosts[host]:
                del self._hosts[host]

    def shed(self) -> bool:
        """Out of file descriptors: drop one connection that is waiting idle, to accept another; False
        if none is waiting."""
        if not self._waiting:
            return False
        self._make_room(None, None, "the open-files limit", room=len(self._waiting) - 1)
        return True

    def _make_room(
        self, mine: Callable[[Waiting], bool] | None, new: Waiting | None, cap: str, room: int | None = None
    ) -> None:
        def over() -> bool:
            if room is not None:
                return len(self._waiting) > room
            if mine is None:
                return len(self._waiting) > self.limit
            assert new is not None
            return self._hosts[new.host] > self.per_host

        while over():
            victim = self._victim(mine, new)
            if victim is None:
                return
            victim.drop()
            self.leave(victim)
            self.dropped += 1
            self._budget.note(
                f"dropped a connection from {victim.host} still in its handshake: over the cap of {cap} "
                f"(ppserver --max-handshakes, --max-handshakes-per-host)",
                f"dropped over the cap of {cap}",
            )

    def _victim(self, mine: Callable[[Waiting], bool] | None, new: Waiting | None) -> Waiting | None:
        """The first that has sent nothing even after a read, oldest first; else the oldest one."""
        oldest: Waiting | None = None
        for conn in list(self._waiting):
            if conn is new or (mine is not None and not mine(conn)):
                continue
            if conn.progress() == 0 and conn.poll() and conn.progress() == 0:
                return conn
            if conn in self._waiting and oldest is None:
                oldest = conn
        return oldest


class Door:
    """Accepts connections on a listening socket and hands each to `arrived`, pausing when out of files."""

    def __init__(
        self,
        loop: Loop,
        listener: socket.socket,
        arrived: Callable[[socket.socket, tuple[str, int]], None],
        gate: HandshakeGate,
        connections: Sized,
    ) -> None:
        self._loop = loop
        self._listener = listener
        self._arrived = arrived
        self._gate = gate
        self._connections = connections  # what is open, for the log line
        self._pause = 0.0
        self._timer: Timer | None = None
        self._failures = LogBudget(loop, log.error, what="accept failure(s)", burst=1)
        loop.add_reader(listener.fileno(), self._accept, self._failed)

    def _accept(self) -> None:
        listener = self._listener
        for _ in range(64):
            try:
                sock, addr = listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                if exc.errno in _OUT_OF_FILES:
                    if self._gate.shed():  # a connection idle in its handshake made room: try again
                        continue
                    self._wait(exc)
                    return
                if exc.errno == errno.ECONNABORTED:  # the peer gave up while it waited in the backlog
                    continue
                self._failures.note(f"accept failed: {exc}", exc.strerror or str(exc))
                return
            self._pause = 0.0
            self._arrived(sock, addr)

    def _wait(self, exc: OSError) -> None:
        """Out of file descriptors with nothing to shed: stop accepting for a while (connections wait in the
        backlog) rather than be woken again at once by the same failure."""
        self._pause = min(1.0, max(0.05, self._pause * 2))
        self._loop.remove_reader(self._listener.fileno())
        self._timer = self._loop.call_later(self._pause, self._reopen)
        self._failures.note(
            f"cannot accept connections: {exc.strerror or exc}; {len(self._connections)} connection(s) open, "
            f"{len(self._gate)} in their handshake; accepting again in {self._pause:.2f} s (raise the "
            f"open-files limit, ulimit -n, or lower --max-handshakes)",
            exc.strerror or str(exc),
        )

    def _failed(self, exc: BaseException) -> None:
        """`_accept` raised (the loop logged it with its traceback): the listener stays, accepting again
        after a pause, so that a bug that repeats cannot spin the loop. Sessions are guarded by their
        streams."""
        self._loop.remove_reader(self._listener.fileno())
        if self._timer is None:
            self._timer = self._loop.call_later(1.0, self._reopen)

    def _reopen(self) -> None:
        self._timer = None
        self._loop.add_reader(self._listener.fileno(), self._accept, self._failed)

    def close(self) -> None:
        """Stop accepting (the listener itself belongs to the caller)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._loop.remove_reader(self._listener.fileno())
        self._failures.close()
