"""`Stream`: one non-blocking socket speaking the ppft protocol, driven by a `Loop`.

It owns the socket, the protocol `Connection` and the bytes waiting to be written, and enforces the time
rules the sans-I/O protocol cannot: a peer must finish its handshake within `handshake_timeout` (so idle
half-open connections cannot pin a server), an established stream sends a `Heartbeat` after
`heartbeat_interval` of quiet, and a peer silent for `silence_timeout` is declared gone even though its
socket never closed. Events go to `on_event`; the end of the stream, whatever ended it, is reported once
to `on_close` with a reason a person can act on (the owner names the peer).
"""

from __future__ import annotations

import contextlib
import errno
import logging
import socket
import time
from collections.abc import Callable

from ppft_protocol import (
    AuthenticationError,
    Bye,
    Closed,
    Connection,
    Established,
    Event,
    FrameTooLarge,
    Heartbeat,
    LegacyPeerError,
    Message,
    ProtocolError,
    ProtocolMismatchError,
    State,
)

from .loop import Loop, Timer
from .outbuf import OutBuffer
from .reads import READ_SIZE, next_read_size

__all__ = ["Stream", "describe_protocol_error", "shown"]

log = logging.getLogger("ppft.stream")

_IOV_MAX = 512  # parts per sendmsg call, well under every system's IOV_MAX


def shown(text: str, limit: int = 200) -> str:
    """`text` from a peer, safe to log: control characters escaped, at most `limit` characters."""
    if len(text) > limit:
        text = text[:limit] + "..."
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def describe_protocol_error(exc: ProtocolError) -> str:
    """A short label for logs: what kind of refusal this was, then the error's own message."""
    if isinstance(exc, AuthenticationError):
        kind = "wrong secret"
    elif isinstance(exc, LegacyPeerError):
        kind = "legacy ppft 1.x peer"
    elif isinstance(exc, ProtocolMismatchError):
        kind = "protocol mismatch"
    elif isinstance(exc, FrameTooLarge):
        kind = "oversized frame"
    else:
        kind = "protocol error"
    return f"{kind}: {exc}"


class Stream:
    """A protocol connection over a connected non-blocking socket."""

    def __init__(
        self,
        loop: Loop,
        sock: socket.socket,
        conn: Connection,
        *,
        peer: str,
        on_event: Callable[[Event], None],
        on_close: Callable[[str], None],
        handshake_timeout: float = 5.0,
        heartbeat_interval: float = 1.0,
        silence_timeout: float = 10.0,
    ) -> None:
        self.loop = loop
        self.sock = sock
        self.conn = conn
        self.peer = peer
        self.closed = False
        self.bye_reason: str | None = None
        """What the peer said when it left (its `Bye`, escaped for logs); None while it has said nothing."""
        self._fd = sock.fileno()
        self._on_event = on_event
        self._on_close = on_close
        self._out = OutBuffer()
        self._read_size = READ_SIZE
        self._heartbeat_interval = heartbeat_interval
        self._silence_timeout = silence_timeout
        self._last_recv = self._last_send = time.monotonic()
        self._timer: Timer | None = loop.call_later(handshake_timeout, self._handshake_deadline)
        sock.setblocking(False)
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        loop.add_reader(self._fd, self._readable)
        self.flush()

    # -- sending ---------------------------------------------------------------------------------------

    def send(self, message: Message) -> None:
        """Queue `message` and write what the socket takes now."""
        if self.closed:
            return
        self.conn.send(message)
        self.flush()

    def flush(self) -> None:
        """Send what the connection has queued: what the socket takes now, large payloads uncopied
        (`sendmsg`); the rest waits in the out buffer until the socket drains."""
        parts = self.conn.data_to_send_parts()
        if not parts or self.closed:
            return
        self._last_send = time.monotonic()
        out = self._out
        if out.size:
            out.extend(parts)
            return
        try:
            n = self.sock.send(parts[0]) if len(parts) == 1 else self.sock.sendmsg(parts[:_IOV_MAX])
        except BlockingIOError:
            n = 0
        except OSError as exc:
            self._fail(f"the connection broke while sending ({exc.strerror or exc})")
            return
        out.extend(parts, n)
        if out.size:
            self.loop.add_writer(self._fd, self._writable)

    def _writable(self) -> None:
        try:
            self._out.write_to(self._fd)
        except BlockingIOError:
            return
        except OSError as exc:
            self._fail(f"the connection broke while sending ({exc.strerror or exc})")
            return
        if not self._out.size:
            self.loop.remove_writer(self._fd)

    # -- receiving -------------------------------------------------------------------------------------

    def _readable(self) -> None:
        conn = self.conn
        view = conn.receive_buffer()  # the rest of a large frame: received in place, not copied
        while True:
            try:
                if view is None:
                    size = self._read_size
                    data = self.sock.recv(size)
                    self._read_size = next_read_size(size, len(data))
                else:
                    n = self.sock.recv_into(view)
            except BlockingIOError:
                break
            except OSError as exc:
                if exc.errno == errno.ECONNRESET and self.conn.state is State.AWAIT_OPENING:
                    self._fail(
                        "the peer reset the connection before sending its opening (a ppft 1.x client does "
                        "this after a version mismatch: upgrade it to ppft >= 2)"
                    )
                elif exc.errno == errno.ECONNRESET:
                    self._fail("the peer reset the connection")
                else:
                    self._fail(f"the connection broke ({exc.strerror or exc})")
                return
            finally:
                if view is not None:
                    view.release()
            self._last_recv = time.monotonic()
            try:
                if view is None:
                    events = conn.receive_data(data)
                elif n:
                    events = conn.receive_into(n)
                else:
                    events = conn.receive_data(b"")  # the peer closed in the middle of a large frame
            except ProtocolError as exc:
                self.flush_final()
                self._fail(describe_protocol_error(exc))
                return
            for event in events:
                if isinstance(event, Heartbeat):
                    continue
                if isinstance(event, Established):
                    self._established()
                if isinstance(event, Closed):
                    self._fail(self._closed_reason())
                    return
                if isinstance(event, Bye):
                    self.bye_reason = shown(event.reason)
                    continue  # a Closed event follows
                self._on_event(event)
                if self.closed:
                    return
            # A large frame has begun: receive on into its buffer now rather than a loop round later.
            view = conn.receive_buffer()
            if view is None:
                break
        self.flush()

    def _closed_reason(self) -> str:
        """Why the stream ended when the peer closed it: what it said in its `Bye`, or that it said nothing
        (a process killed or crashed closes its sockets without a word)."""
        if self.bye_reason is None:
            return "the peer closed the connection without saying why (killed or crashed?)"
        return f"the peer closed the connection ({self.bye_reason or 'it gave no reason'})"

    # -- time rules ------------------------------------------------------------------------------------

    def _established(self) -> None:
        """The handshake is done: switch from its deadline to heartbeats."""
        if self._timer is not None:
            self._timer.cancel()
        self._timer = self.loop.call_later(self._heartbeat_interval, self._tick)

    def _handshake_deadline(self) -> None:
        self._timer = None
        if self.conn.state is not State.ESTABLISHED and not self.closed:
            self._fail("the peer did not finish its handshake in time")

    def _tick(self) -> None:
        self._timer = None
        if self.closed:
            return
        now = time.monotonic()
        if now - self._last_recv > self._silence_timeout:
            self._fail(f"the peer went silent for {now - self._last_recv:.0f} s (no heartbeat)")
            return
        if now - self._last_send >= self._heartbeat_interval and self.conn.state is State.ESTABLISHED:
            self.send(Heartbeat())
        self._timer = self.loop.call_later(self._heartbeat_interval, self._tick)

    # -- ending ----------------------------------------------------------------------------------------

    def flush_final(self) -> None:
        """Best effort: write a last frame (AUTH_FAILED, Bye) before the socket closes."""
        data = self.conn.data_to_send()
        if data:
            with contextlib.suppress(OSError):
                self.sock.send(data)

    def close(self, reason: str = "", *, bye: bool = True) -> None:
        """Close from this side (telling the peer why, with `Bye`); `on_close` is not called."""
        if self.closed:
            return
        if bye and self.conn.state is State.ESTABLISHED:
            with contextlib.suppress(ProtocolError):
                self.conn.send(Bye(reason))
            if not self._out.size:
                self.flush_final()
        self._teardown()

    def _fail(self, reason: str) -> None:
        if self.closed:
            return
        self._teardown()
        self._on_close(reason)

    def _teardown(self) -> None:
        self.closed = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self.loop.remove_reader(self._fd)
        self.loop.remove_writer(self._fd)
        with contextlib.suppress(OSError):
            self.sock.close()
