"""Peers that are not ppft, for the tests that point a client at them: a TCP listener on 127.0.0.1 that runs
a handler for every connection on a thread of its own, and the greetings of peers that speak something else
(ppft 1.x, a newer protocol).

`FakePeer(handler)` listens on a port from bind(0) and is closed by `close()` (the `fake_peer` fixture of
conftest.py closes every one a test made, even when the test fails); every wait it makes has a timeout.
"""

from __future__ import annotations

import socket
import struct
import threading
from collections.abc import Callable

__all__ = ["FakePeer", "greeting_then_read", "legacy_message"]


class FakePeer:
    """A TCP listener on 127.0.0.1 that runs `handler(conn)` for every connection, one after the other, on
    its own thread; `conn` has a 5 s timeout, and an `OSError` in the handler ends that connection only."""

    def __init__(self, handler: Callable[[socket.socket], None]) -> None:
        self.handler = handler
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            with conn:
                conn.settimeout(5)
                try:
                    self.handler(conn)
                except OSError:
                    pass

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.sock.close()


def legacy_message(text: bytes) -> bytes:
    """How ppft 1.x frames a message on its sockets: an 8-byte big-endian length, then the bytes."""
    return struct.pack("!Q", len(text)) + text


def greeting_then_read(greeting: bytes, received: bytearray | None = None) -> Callable[[socket.socket], None]:
    """A handler that sends `greeting`, then reads what the client answers (for half a second at most) into
    `received`."""

    def handle(conn: socket.socket) -> None:
        conn.sendall(greeting)
        conn.settimeout(0.5)
        data = conn.recv(4096)
        if received is not None:
            received.extend(data)

    return handle
