"""Name resolution off the loop's thread: `resolve(loop, host, port, callback)`.

`getaddrinfo` can take seconds (a slow or dead DNS server, an mDNS name) and cannot be interrupted: run by an
I/O thread it would stall every job of every node. So names are resolved by a few daemon threads shared by
the process, and each answer comes back to the loop's thread through `call_soon_threadsafe`. A numeric
address (`127.0.0.1`, `::1`) is read on the caller's thread (`AI_NUMERICHOST` never blocks), and its answer
is delivered the same way, so a caller never sees its callback run from inside `resolve`.

At most `MAX_THREADS` names are resolved at once (more wait their turn); a thread ends after `IDLE_EXIT`
seconds without work. A thread stuck in a resolver past its owner's life is a daemon: it never delays the
interpreter's exit, and its late answer is dropped (`Resolution.cancel`). This module touches the loop only
through `call_soon_threadsafe`, and calls `socket.getaddrinfo` at the time of use (tests replace it).
"""

from __future__ import annotations

import ipaddress
import socket
import threading
from collections import deque
from collections.abc import Callable
from typing import Any

from .loop import ErrorHandler, Loop

__all__ = ["MAX_THREADS", "AddrInfo", "Resolution", "resolve"]

MAX_THREADS = 4
"""Names resolved at the same time, at most."""
IDLE_EXIT = 10.0
"""Seconds a resolver thread waits for work before it ends."""

AddrInfo = tuple[Any, ...]  # (family, type, proto, canonname, sockaddr), as socket.getaddrinfo returns
Answer = Callable[[list[AddrInfo], str], None]


class Resolution:
    """One name being resolved: `callback(addresses, "")` or `callback([], reason)` runs on the loop's
    thread, unless `cancel()` came first."""

    __slots__ = ("_callback", "_loop", "_on_error", "cancelled", "host", "port")

    def __init__(self, loop: Loop, host: str, port: int, callback: Answer, on_error: ErrorHandler | None):
        self._loop = loop
        self.host = host
        self.port = port
        self._callback = callback
        self._on_error = on_error
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True

    def _deliver(self, addresses: list[AddrInfo], reason: str) -> None:
        """From any thread: hand the answer to the loop."""
        if not self.cancelled:
            self._loop.call_soon_threadsafe(lambda: self._answer(addresses, reason), self._on_error)

    def _answer(self, addresses: list[AddrInfo], reason: str) -> None:
        if not self.cancelled:
            self.cancelled = True  # answered once
            self._callback(addresses, reason)


def resolve(
    loop: Loop, host: str, port: int, callback: Answer, on_error: ErrorHandler | None = None
) -> Resolution:
    """Resolve `host:port` (TCP) without blocking the caller; the answer goes to `callback` on `loop`'s
    thread, in the order the system's resolver gave the addresses (`on_error`: if `callback` raises)."""
    resolution = Resolution(loop, host, port, callback, on_error)
    if _is_numeric(host):
        addresses, reason = _getaddrinfo(host, port, socket.AI_NUMERICHOST)
        resolution._deliver(addresses, reason)
    else:
        _POOL.submit(resolution)
    return resolution


def _is_numeric(host: str) -> bool:
    try:
        ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return False
    return True


def _getaddrinfo(host: str, port: int, flags: int = 0) -> tuple[list[AddrInfo], str]:
    """(addresses, "") or ([], a reason a person can act on); never raises."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=flags)
    except socket.gaierror as exc:
        return [], f"cannot resolve host {host!r} ({exc.strerror or exc})"
    except UnicodeError as exc:
        return [], f"cannot resolve host {host!r} (not a valid host name: {exc})"
    except Exception as exc:  # noqa: BLE001 - whatever the resolver does is this name's failure only
        return [], f"cannot resolve host {host!r} ({type(exc).__name__}: {exc})"
    addresses = [info for info in infos if info[0] in (socket.AF_INET, socket.AF_INET6)]
    if not addresses:
        return [], f"cannot resolve host {host!r} (no IPv4 or IPv6 address)"
    return addresses, ""


class _Pool:
    """Daemon threads taking resolutions from one queue; started on demand, ended when idle."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._work = threading.Condition(self._lock)
        self._queue: deque[Resolution] = deque()
        self._threads = 0
        self._idle = 0

    def submit(self, resolution: Resolution) -> None:
        with self._lock:
            self._queue.append(resolution)
            if self._idle:
                self._work.notify()
                return
            if self._threads >= MAX_THREADS:
                return  # a busy thread takes it next
            self._threads += 1
        try:
            threading.Thread(target=self._run, name="ppft-resolver", daemon=True).start()
        except RuntimeError as exc:  # can't start new thread (or at interpreter exit)
            with self._lock:
                self._threads -= 1
            resolution._deliver([], f"cannot resolve host {resolution.host!r} (no resolver thread: {exc})")

    def _run(self) -> None:
        while True:
            with self._lock:
                while not self._queue:
                    self._idle += 1
                    woken = self._work.wait(IDLE_EXIT)
                    self._idle -= 1
                    if not woken and not self._queue:
                        self._threads -= 1
                        return
                resolution = self._queue.popleft()
            if resolution.cancelled:
                continue
            addresses, reason = _getaddrinfo(resolution.host, resolution.port)
            resolution._deliver(addresses, reason)


_POOL = _Pool()
