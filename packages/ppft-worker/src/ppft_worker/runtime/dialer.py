"""`Dial`: one attempt to open a TCP connection to `host:port` from a loop, never blocking it.

    start --> resolve (resolver threads) --> addresses, families interleaved (RFC 8305 section 4)
          --> connect to the first; a new address every STAGGER s while none has answered, or at once when
              one fails --> the first to connect wins, the others are closed --> on_done(sock, "")
          --> every address failed --> on_done(None, reason naming what failed, per address if they differ)

This is "happy eyeballs" in small: `localhost` resolving to `::1` first, with a ppserver listening only on
127.0.0.1, connects at once (the refusal of `::1` moves on to the next address); an address that swallows
packets costs STAGGER seconds, not the connect timeout, when another address answers. Sockets are
non-blocking, waits are timers and writability, a failure to open a socket (EMFILE) is just that address's
failure. `on_done` runs once, on the loop's thread; `cancel()` closes everything and it never runs.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import os
import socket
from collections.abc import Callable

from .loop import Loop, Timer
from .resolver import AddrInfo, Resolution, resolve
from .stream import internal_error_reason

__all__ = ["CONNECT_TIMEOUT", "RESOLVE_TIMEOUT", "STAGGER", "Dial", "describe_connect_error"]

CONNECT_TIMEOUT = 5.0
"""Seconds an address has to accept the connection."""
RESOLVE_TIMEOUT = 30.0
"""Seconds the resolver has to answer for a name."""
STAGGER = 0.25
"""Seconds before the next address is tried while an attempt is still pending (RFC 8305 suggests 250 ms)."""

_CONNECT_ERRORS = {
    errno.ECONNREFUSED: "connection refused (is ppserver running there, on that port?)",
    errno.EHOSTUNREACH: "host unreachable",
    errno.ENETUNREACH: "network unreachable",
    errno.ETIMEDOUT: "connection timed out",
    errno.EADDRNOTAVAIL: "address not available here (no route for this address family?)",
}


def describe_connect_error(code: int) -> str:
    """The reason a person reads for a failed connect's errno."""
    return _CONNECT_ERRORS.get(code, os.strerror(code))


def _interleave(addresses: list[AddrInfo]) -> list[AddrInfo]:
    """The addresses with their families alternating, starting with the resolver's first choice."""
    seen: set[object] = set()
    unique = []
    for info in addresses:
        if info[4] not in seen:
            seen.add(info[4])
            unique.append(info)
    if not unique:
        return unique
    first = [info for info in unique if info[0] == unique[0][0]]
    other = [info for info in unique if info[0] != unique[0][0]]
    merged: list[AddrInfo] = []
    for index in range(max(len(first), len(other))):
        merged += first[index : index + 1] + other[index : index + 1]
    return merged


def _text(info: AddrInfo) -> str:
    host, port = info[4][0], info[4][1]
    return f"[{host}]:{port}" if info[0] == socket.AF_INET6 else f"{host}:{port}"


class Dial:
    """Connect to `host:port`; `on_done(sock, "")` with a connected non-blocking socket, or
    `on_done(None, reason)`."""

    def __init__(
        self,
        loop: Loop,
        host: str,
        port: int,
        on_done: Callable[[socket.socket | None, str], None],
        *,
        timeout: float = CONNECT_TIMEOUT,
        stagger: float = STAGGER,
    ) -> None:
        self.loop = loop
        self.host = host
        self.port = port
        self.finished = False
        self._on_done = on_done
        self._timeout = timeout
        self._stagger = stagger
        self._resolution: Resolution | None = None
        self._addresses: list[AddrInfo] = []
        self._pending: dict[socket.socket, tuple[AddrInfo, Timer]] = {}
        self._failures: list[tuple[str, str]] = []  # (address, reason), in the order tried
        self._next_timer: Timer | None = None
        self._resolve_timer: Timer | None = None

    def start(self) -> None:
        self._resolution = resolve(self.loop, self.host, self.port, self._resolved, self._crash)
        if not self.finished:
            self._resolve_timer = self.loop.call_later(RESOLVE_TIMEOUT, self._resolve_late, self._crash)

    def cancel(self) -> None:
        """Stop: close every socket opened; `on_done` is not called."""
        self.finished = True
        self._stop()

    # -- steps -----------------------------------------------------------------------------------------

    def _resolve_late(self) -> None:
        self._resolve_timer = None
        if self._resolution is not None and not self._resolution.cancelled:
            self._resolution.cancel()
            self._finish(
                None, f"cannot resolve host {self.host!r} (no answer within {RESOLVE_TIMEOUT:.0f} s)"
            )

    def _resolved(self, addresses: list[AddrInfo], reason: str) -> None:
        if self._resolve_timer is not None:
            self._resolve_timer.cancel()
            self._resolve_timer = None
        if self.finished:
            return
        if not addresses:
            self._finish(None, reason)
            return
        self._addresses = _interleave(addresses)
        self._attempt()

    def _attempt(self) -> None:
        """Start the next address (and after STAGGER, the one after it, while none has answered)."""
        self._next_timer = None
        while self._addresses and not self.finished:
            info = self._addresses.pop(0)
            family, kind, proto, _, address = info
            try:
                sock = socket.socket(family, kind, proto)
            except OSError as exc:
                self._failures.append((_text(info), f"cannot open a socket ({exc.strerror or exc})"))
                continue
            try:
                sock.setblocking(False)
                code = sock.connect_ex(address)
            except OSError as exc:
                code = exc.errno or errno.EINVAL
            if code not in (0, errno.EINPROGRESS):
                sock.close()
                self._failures.append((_text(info), describe_connect_error(code)))
                continue
            timer = self.loop.call_later(self._timeout, functools.partial(self._timed_out, sock), self._crash)
            self._pending[sock] = (info, timer)
            self.loop.add_writer(sock.fileno(), functools.partial(self._writable, sock), self._crash)
            if self._addresses:
                self._next_timer = self.loop.call_later(self._stagger, self._attempt, self._crash)
            return
        if not self._pending:
            self._finish(None, self._reason())

    def _writable(self, sock: socket.socket) -> None:
        entry = self._pending.pop(sock, None)
        if entry is None:
            return
        info, timer = entry
        timer.cancel()
        self.loop.remove_writer(sock.fileno())
        code = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if code == 0:
            self._finish(sock, "")
            return
        sock.close()
        self._failures.append((_text(info), describe_connect_error(code)))
        self._next_now()

    def _timed_out(self, sock: socket.socket) -> None:
        entry = self._pending.pop(sock, None)
        if entry is None:
            return
        self.loop.remove_writer(sock.fileno())
        sock.close()
        reason = f"no answer within {self._timeout:.0f} s (host down, or a firewall drops it)"
        self._failures.append((_text(entry[0]), reason))
        self._next_now()

    def _next_now(self) -> None:
        """An attempt failed: the next address now, rather than when the stagger timer says."""
        if self._next_timer is not None:
            self._next_timer.cancel()
            self._next_timer = None
        if self._addresses:
            self._attempt()
        elif not self._pending:
            self._finish(None, self._reason())

    def _reason(self) -> str:
        reasons = {reason for _, reason in self._failures}
        if len(reasons) == 1:
            return reasons.pop()
        return "; ".join(f"{address}: {reason}" for address, reason in self._failures) or "no address to try"

    # -- ending ----------------------------------------------------------------------------------------

    def _crash(self, exc: BaseException) -> None:
        """A callback of this dial raised (the loop logged it): it fails as a whole."""
        if not self.finished:
            self._finish(None, internal_error_reason(exc))

    def _finish(self, sock: socket.socket | None, reason: str) -> None:
        if self.finished:
            if sock is not None:
                sock.close()
            return
        self.finished = True
        self._stop()
        self._on_done(sock, reason)

    def _stop(self) -> None:
        if self._resolution is not None:
            self._resolution.cancel()
        for timer in (self._next_timer, self._resolve_timer):
            if timer is not None:
                timer.cancel()
        self._next_timer = self._resolve_timer = None
        pending, self._pending = self._pending, {}
        for sock, (_, timer) in pending.items():
            timer.cancel()
            self.loop.remove_writer(sock.fileno())
            with contextlib.suppress(OSError):
                sock.close()
