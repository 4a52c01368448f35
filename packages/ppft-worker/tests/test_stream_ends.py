"""How a `Stream` says its established peer went away: a peer killed with bytes of ours unread resets the
connection instead of closing it, and is the same case as one that closed (killed or crashed), not a
different message that depends on whether a heartbeat was in flight at the moment it died."""

from __future__ import annotations

import queue
import socket
import struct

import pytest
from looplib import TIMEOUT, on_loop

from ppft_protocol import Bye, Connection, Established, Event, Role
from ppft_worker.runtime.loop import Loop
from ppft_worker.runtime.stream import Stream

SECRET = b"stream ends test"
UNSAID = "the peer closed the connection without saying why (killed or crashed?)"


def _established(loop: Loop, ends: queue.Queue[str]) -> tuple[socket.socket, Connection, list[Event]]:
    """A Stream (client side, on `loop`) over a real TCP connection whose other end the test speaks by hand
    (blocking): (the peer's socket, its Connection, the stream's events), once both ends are established.
    The stream's end reason goes to `ends`."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        ours = socket.create_connection(listener.getsockname(), timeout=TIMEOUT)
        peer, _ = listener.accept()
    peer.settimeout(TIMEOUT)
    events: list[Event] = []
    on_loop(loop, lambda: Stream(loop, ours, Connection(Role.CLIENT, SECRET), peer="test peer",
                                  on_event=events.append, on_close=ends.put))  # fmt: skip
    conn = Connection(Role.SERVER, SECRET)
    peer.sendall(conn.data_to_send())
    while not any(isinstance(e, Established) for e in conn.receive_data(peer.recv(65536))):
        peer.sendall(conn.data_to_send())
    peer.sendall(conn.data_to_send())
    return peer, conn, events


@pytest.mark.parametrize("how", ["close", "reset"])
def test_a_peer_that_ends_without_a_word_closed_without_saying_why(running_loop: Loop, how: str) -> None:
    ends: queue.Queue[str] = queue.Queue()
    peer, _, _ = _established(running_loop, ends)
    if how == "reset":  # as the kernel does for a killed process with unread bytes in its socket
        peer.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    peer.close()
    assert ends.get(timeout=TIMEOUT) == UNSAID


def test_a_peer_that_said_bye_then_reset_is_said_to_have_closed_with_its_reason(running_loop: Loop) -> None:
    ends: queue.Queue[str] = queue.Queue()
    peer, conn, _ = _established(running_loop, ends)
    conn.send(Bye("ppserver got SIGTERM"))
    peer.sendall(conn.data_to_send())
    peer.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    peer.close()
    assert ends.get(timeout=TIMEOUT) in (
        "the peer closed the connection (ppserver got SIGTERM)",
        UNSAID,  # the reset may overtake the Bye: the kernel drops what was not read yet
    )
