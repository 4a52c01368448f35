"""`Stream`: one non-blocking socket speaking the ppft protocol, driven by a `Loop`.

The socket may also be a `PipeChannel` (a pipe each way: the stdin and stdout of an ssh node's remote side),
whose reads and writes go through two descriptors; nothing else changes.

It owns the socket, the protocol `Connection` and the bytes waiting to be written, and enforces the time
rules the sans-I/O protocol cannot: a peer must finish its handshake within `handshake_timeout` (so idle
half-open connections cannot pin a server), an established stream sends a `Heartbeat` after
`heartbeat_interval` of quiet, and a peer silent for `silence_timeout` is declared gone even though its
socket never closed. Events go to `on_event`; the end of the stream, whatever ended it, is reported once
to `on_close` with a reason a person can act on (the owner names the peer).

A bug anywhere on the way (in the stream, the protocol, or the owner's handling of an event) ends this one
stream the same way, with the reason "internal error in the I/O thread (...)": the loop logs the traceback
once, the owner's `on_close` runs as for a peer that went away (its jobs run elsewhere), and the loop and
every other stream go on. A failure while sending (an error from the socket, a message that cannot be
encoded) reports `on_close` on the loop's next round rather than from inside `send`, so that an owner
sending to many peers never sees its collection change under its loop.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import socket
import time
from collections.abc import Callable

from ppft_protocol import (
    READ_SIZE,
    AuthenticationError,
    Bye,
    Closed,
    Connection,
    DowngradeError,
    Established,
    Event,
    FrameTooLarge,
    Heartbeat,
    LegacyPeerError,
    Message,
    ProtocolError,
    ProtocolMismatchError,
    State,
    next_read_size,
    printable,
)

from .loop import Loop, Timer, describe_callback
from .outbuf import OutBuffer

TYPE_CHECKING = False
if TYPE_CHECKING:
    from .pipes import PipeChannel  # imported by those who use it only: a pipe pair is rare

__all__ = ["Stream", "describe_protocol_error", "internal_error_reason"]

log = logging.getLogger("ppft.stream")

_IOV_MAX = 512  # parts per sendmsg call, well under every system's IOV_MAX


def internal_error_reason(exc: BaseException) -> str:
    """The reason given when a bug closes a connection: short, naming the error (the loop logged the
    traceback)."""
    try:
        text = str(exc)
    except Exception:  # noqa: BLE001 - a broken __str__ must not hide the failure itself
        text = ""
    text = text if len(text) <= 200 else text[:200] + "..."
    return (
        f"internal error in the I/O thread ({type(exc).__name__}: {text})"
        if text
        else (f"internal error in the I/O thread ({type(exc).__name__})")
    )


def describe_protocol_error(exc: ProtocolError) -> str:
    """A short label for logs: what kind of refusal this was, then the error's own message."""
    if isinstance(exc, DowngradeError):
        kind = "protocol downgrade"
    elif isinstance(exc, AuthenticationError):
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
        sock: socket.socket | PipeChannel,
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
        self._wfd: int = getattr(sock, "write_fd", self._fd)  # watched for writing: a PipeChannel's own
        self._on_event = on_event
        self._on_close = on_close
        self._out = OutBuffer()
        self._read_size = READ_SIZE
        self._heartbeat_interval = heartbeat_interval
        self._silence_timeout = silence_timeout
        self._last_recv = self._last_send = time.monotonic()
        self._paused = False  # reading paused by the owner (backpressure): the peer's bytes wait
        self._timer: Timer | None = loop.call_later(
            handshake_timeout, self._handshake_deadline, self._internal_error
        )
        sock.setblocking(False)
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        loop.add_reader(self._fd, self._readable, self._internal_error)
        self.flush()

    # -- sending ---------------------------------------------------------------------------------------

    def send(self, message: Message) -> None:
        """Queue `message` and write what the socket takes now. Nothing, once the peer said Bye: an event
        handled after it arrived (in the same read) may still want to answer."""
        if self.closed or self.conn.state is State.CLOSED:
            return
        try:
            self.conn.send(message)
        except Exception as exc:  # noqa: BLE001 - a message that cannot go closes this stream, nothing else
            self.loop.report(exc, f"sending {type(message).__name__} to {self.peer} failed")
            self._fail(internal_error_reason(exc), later=True)
            return
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
            self._fail(f"the connection broke while sending ({exc.strerror or exc})", later=True)
            return
        out.extend(parts, n)
        if out.size:
            self.loop.add_writer(self._wfd, self._writable, self._internal_error)

    def _writable(self) -> None:
        try:
            self._out.write_to(self._wfd)
        except BlockingIOError:
            return
        except OSError as exc:
            self._fail(f"the connection broke while sending ({exc.strerror or exc})")
            return
        if not self._out.size:
            self.loop.remove_writer(self._wfd)

    @property
    def unsent(self) -> int:
        """Bytes queued for the peer that the socket has not taken yet (the peer reads slowly, or not)."""
        return self._out.size

    # -- receiving -------------------------------------------------------------------------------------

    @property
    def paused(self) -> bool:
        return self._paused

    def pause_reading(self) -> None:
        """Stop reading the peer's bytes (backpressure): they wait in the kernel's buffers, then in the
        peer's, whose sends block. Nothing is lost; the peer is not counted silent meanwhile."""
        if not self._paused and not self.closed:
            self._paused = True
            self.loop.remove_reader(self._fd)

    def resume_reading(self) -> None:
        if self._paused and not self.closed:
            self._paused = False
            self._last_recv = time.monotonic()
            # what waits is read in the loop's next round
            self.loop.add_reader(self._fd, self._readable, self._internal_error)

    def read_now(self) -> None:
        """Take in whatever the peer has sent so far, now (the socket never blocks): its handshake may finish
        or fail here, with the usual events and `on_close`."""
        if not self.closed and not self._paused:
            try:
                self._readable()
            except Exception as exc:  # noqa: BLE001 - as the loop would: this stream ends, its caller goes on
                self.fail(exc, f"reading {self.peer} at once")

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
                elif exc.errno == errno.ECONNRESET and (
                    self.conn.state is State.ESTABLISHED or self.bye_reason is not None
                ):
                    # A peer that ends with bytes of ours unread resets rather than closes: a process killed
                    # just after we wrote to it (a heartbeat) is the same case as one killed a moment later.
                    self._fail(self._closed_reason())
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
                    self.bye_reason = printable(event.reason, 1000)
                    continue  # a Closed event follows
                self._on_event(event)
                if self.closed:
                    return
            if self._paused:
                break  # the owner wants no more for now: the rest stays in the kernel's buffers
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
        self._timer = self.loop.call_later(self._heartbeat_interval, self._tick, self._internal_error)

    def _handshake_deadline(self) -> None:
        self._timer = None
        if self.conn.state is not State.ESTABLISHED and not self.closed:
            self._fail("the peer did not finish its handshake in time")

    def _tick(self) -> None:
        self._timer = None
        if self.closed:
            return
        now = time.monotonic()
        if self._paused:
            self._last_recv = now  # we are not reading: the peer's heartbeats wait unread
        elif now - self._last_recv > self._silence_timeout:
            self._fail(f"the peer went silent for {now - self._last_recv:.0f} s (no heartbeat)")
            return
        if now - self._last_send >= self._heartbeat_interval and self.conn.state is State.ESTABLISHED:
            self.send(Heartbeat())
        self._timer = self.loop.call_later(self._heartbeat_interval, self._tick, self._internal_error)

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

    def detach(self) -> socket.socket | None:
        """Stop using the socket without closing it, and give it to the caller: a connection handed on to
        another protocol endpoint (`Attached`: a worker process). What the connection queued is written
        first; `on_close` is not called. None, the stream closed, when the socket did not take all of it at
        once (a connection is never handed on half written) or the stream had ended."""
        if self.closed:
            return None
        self.flush()
        if self.closed or self._out.size or not isinstance(self.sock, socket.socket):
            self._teardown()
            return None
        self._teardown(close=False)
        return self.sock

    def fail(self, exc: BaseException, what: str) -> None:
        """A bug while the owner used this stream (`what`: "dispatching jobs to ppserver X"): log it once
        with its traceback, end the stream, and report `on_close` on the loop's next round."""
        self.loop.report(exc, f"{what} failed; the connection is closed, the loop goes on")
        self._fail(internal_error_reason(exc), later=True)

    def _internal_error(self, exc: BaseException) -> None:
        """The loop's error handler for this stream's callbacks (it logged the traceback): the stream ends,
        and its owner hears of it as of any other end."""
        if self.closed:
            # The stream had ended already: the failure came from its owner's `on_close`, which is the
            # owner's to survive; nothing of the stream is left to close.
            log.debug("%s: %s after the stream ended", self.peer, describe_callback(self._on_close))
            return
        self._fail(internal_error_reason(exc))

    def _fail(self, reason: str, *, later: bool = False) -> None:
        """End the stream now and tell the owner: at once, or (`later`) on the loop's next round."""
        if self.closed:
            return
        self._teardown()
        if later:
            on_close = self._on_close
            self.loop.call_soon_threadsafe(lambda: on_close(reason))
        else:
            self._on_close(reason)

    def _teardown(self, *, close: bool = True) -> None:
        """Leave the loop for good; `close`: the socket too (not when it is handed on: `detach`)."""
        self.closed = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self.loop.remove_reader(self._fd)
        self.loop.remove_writer(self._wfd)
        if close:
            with contextlib.suppress(OSError):
                self.sock.close()
