"""UDP sockets for auto-discovery, shared by ppserver's announcer and the client's discovery."""

from __future__ import annotations

import contextlib
import socket

from .loop import Loop

__all__ = ["bind_broadcast_socket", "close_registered"]


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
