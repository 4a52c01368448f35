"""UDP sockets for auto-discovery, shared by ppserver's announcer and the client's discovery.

A bug in an endpoint's reading or sending closes its socket and opens it again a little later (1 s,
doubling to 60 s while it keeps failing): the loop, and everything else on it, goes on.
"""

from __future__ import annotations

import contextlib
import logging
import socket

from .loop import Loop, Timer
from .stream import internal_error_reason

log = logging.getLogger("ppft.udp")

_RESTART_DELAY = 1.0
_MAX_RESTART_DELAY = 60.0

__all__ = ["BroadcastEndpoint", "bind_broadcast_socket", "close_registered"]


def bind_broadcast_socket(host: str, port: int) -> socket.socket:
    """A non-blocking UDP socket bound to (host, port) that may share the port with other processes on
    this host (a ppserver and clients on one machine) and send broadcasts. Raises `OSError`."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if hasattr(socket, "SO_REUSEPORT"):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    sock.setblocking(False)
    return sock


def close_registered(loop: Loop, sock: socket.socket) -> None:
    """Unregister `sock` from `loop` (a no-op once the loop is closed) and close it."""
    with contextlib.suppress(OSError):
        loop.remove_reader(sock.fileno())
    sock.close()


class BroadcastEndpoint:
    """A UDP socket on a `Loop` that sends one datagram now and then every `_interval()` seconds, and
    reads what arrives: the shared life of ppserver's announcer and the client's discovery. Subclasses
    say what to send (`_send`), what to do with what arrives (`_readable`) and how often (`_interval`)."""

    def __init__(self, loop: Loop) -> None:
        self.loop = loop
        self._sock: socket.socket | None = None
        self._timer: Timer | None = None
        self._closed = False
        self._restart_delay = _RESTART_DELAY

    def start(self) -> None:
        """Bind the socket and `_listen` on it (the subclass's); raises if it cannot be bound."""
        raise NotImplementedError

    def _listen(self, sock: socket.socket) -> None:
        """Take `sock` (bound, non-blocking), start reading it and send the first datagram at once."""
        self._sock = sock
        self.loop.add_reader(sock.fileno(), self._readable, self._crashed)
        self._timer = self.loop.call_later(0.0, self._tick, self._crashed)  # on this loop round, guarded

    def close(self) -> None:
        """Stop sending and close the socket (idempotent; also after the loop was closed)."""
        self._closed = True
        self._drop()

    def _drop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        sock, self._sock = self._sock, None
        if sock is not None:
            close_registered(self.loop, sock)

    def _tick(self) -> None:
        self._timer = None
        self._send()
        self._timer = self.loop.call_later(self._interval(), self._tick, self._crashed)

    def _crashed(self, exc: BaseException) -> None:
        """The loop's error handler for this endpoint: close the socket, open it again after a delay."""
        self._drop()
        if self._closed:
            return
        log.warning("auto-discovery socket closed after %s; opening it again in %.0f s",
                    internal_error_reason(exc), self._restart_delay)  # fmt: skip
        self._timer = self.loop.call_later(self._restart_delay, self._restart, self._crashed)
        self._restart_delay = min(_MAX_RESTART_DELAY, self._restart_delay * 2)

    def _restart(self) -> None:
        self._timer = None
        if self._closed:
            return
        try:
            self.start()
        except Exception as exc:  # noqa: BLE001 - cannot bind now: try again later
            self._crashed(exc)

    def _send(self) -> None:
        raise NotImplementedError

    def _interval(self) -> float:
        raise NotImplementedError

    def _readable(self) -> None:
        raise NotImplementedError
