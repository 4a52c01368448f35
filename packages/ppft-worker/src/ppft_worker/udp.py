"""UDP sockets for auto-discovery, shared by ppserver's announcer and the client's discovery."""

from __future__ import annotations

import contextlib
import socket

from .loop import Loop, Timer

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

    def _listen(self, sock: socket.socket) -> None:
        """Take `sock` (bound, non-blocking), start reading it and send the first datagram now."""
        self._sock = sock
        self.loop.add_reader(sock.fileno(), self._readable)
        self._tick()

    def close(self) -> None:
        """Stop sending and close the socket (idempotent; also after the loop was closed)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        sock, self._sock = self._sock, None
        if sock is not None:
            close_registered(self.loop, sock)

    def _tick(self) -> None:
        self._send()
        self._timer = self.loop.call_later(self._interval(), self._tick)

    def _send(self) -> None:
        raise NotImplementedError

    def _interval(self) -> float:
        raise NotImplementedError

    def _readable(self) -> None:
        raise NotImplementedError
