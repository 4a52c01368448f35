"""UDP sockets for auto-discovery, shared by ppserver's announcer and the client's discovery.

`BroadcastEndpoint` is their one socket handling: bound to share the port with the other processes of the
host, it sends a datagram to (broadcast, port) now and every interval (a failed send is logged once per
kind of failure, and that it works again once it does), and reads what arrives in bursts of `READ_BURST`
at most, so a flood cannot starve the loop's other work; a datagram that does not decode is dropped (a
datagram proves nothing anyway: what it suggests is checked over TCP, where the secret is). A bug in an
endpoint's reading or sending closes its socket and opens it again a little later (1 s, doubling to 60 s
while it keeps failing): the loop, and everything else on it, goes on.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import socket
from collections.abc import Iterator

from ppft_protocol import DecodeError
from ppft_protocol.discovery import MAX_DATAGRAM_SIZE, Datagram, decode_datagram

from .loop import Loop, Timer
from .stream import internal_error_reason

log = logging.getLogger("ppft.udp")

_RESTART_DELAY = 1.0
_MAX_RESTART_DELAY = 60.0
_ICMP_ERRORS = (errno.ECONNREFUSED, errno.EHOSTUNREACH, errno.ENETUNREACH)

READ_BURST = 64
"""Datagrams read per wake-up at most, so a flood cannot starve the loop's other work."""

__all__ = ["READ_BURST", "BroadcastEndpoint", "bind_broadcast_socket", "close_registered"]


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
    """A UDP socket on a `Loop` that sends one datagram to (broadcast, port) now and then every `_interval()`
    seconds, and reads what arrives: the shared life of ppserver's announcer and the client's discovery.
    Subclasses say what to send (`_send`, through `_broadcast`), what to do with what arrives (`_readable`,
    through `_received`) and how often (`_interval`)."""

    def __init__(self, loop: Loop, *, interface: str, broadcast: str, port: int) -> None:
        self.loop = loop
        self.interface = interface
        self.broadcast = broadcast
        self.port = port
        self._send_failures: set[int] = set()  # errnos of failed sends already logged
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

    def _broadcast(self, data: bytes, hint: str) -> bool:
        """Send `data` to (broadcast, port) now; True if it went out. A failure is logged once per kind, with
        `hint` (what still works, or what to check), until a send works again; a full socket buffer is not
        a failure (the next tick sends again)."""
        sock = self._sock
        if sock is None:
            return False
        try:
            sock.sendto(data, (self.broadcast, self.port))
        except (BlockingIOError, InterruptedError):
            return False
        except OSError as exc:
            code = exc.errno or 0
            if code not in self._send_failures:
                self._send_failures.add(code)
                log.warning(
                    "auto-discovery: cannot send to %s:%d: %s; %s (retrying every %.0f s)",
                    self.broadcast, self.port, exc.strerror or exc, hint, self._interval(),
                )  # fmt: skip
            return False
        if self._send_failures:
            log.info("auto-discovery: sending to %s:%d works again", self.broadcast, self.port)
            self._send_failures.clear()
        return True

    def _received(self) -> Iterator[tuple[Datagram, tuple[str, int]]]:
        """The datagrams waiting on the socket, decoded, with their senders: `READ_BURST` at most, and none
        more once the socket is closed (by what the caller did with one). One that does not decode is
        dropped (logged at debug)."""
        for _ in range(READ_BURST):
            sock = self._sock
            if sock is None:
                return
            try:
                data, sender = sock.recvfrom(MAX_DATAGRAM_SIZE + 1)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                # An ICMP error queued by an earlier send (ECONNREFUSED and the like): not about reading.
                if exc.errno not in _ICMP_ERRORS:
                    log.warning("auto-discovery: receiving failed: %s", exc)
                return
            try:
                datagram = decode_datagram(data)
            except DecodeError as exc:
                log.debug("auto-discovery: ignored a datagram from %s:%d: %s", sender[0], sender[1], exc)
                continue
            yield datagram, sender

    def _send(self) -> None:
        raise NotImplementedError

    def _interval(self) -> float:
        raise NotImplementedError

    def _readable(self) -> None:
        raise NotImplementedError
