"""Bytes <-> frames: the opening line and the length-prefixed frames that follow it.

Two layouts, both specified in docs/protocol.md:

* The **opening**, sent once by each side as its very first bytes: an 8-byte big-endian length and that many
  bytes of ASCII text, ``ppft-protocol/<min>-<max> (<comment>)``. It has the shape of a ppft 1.x transport
  message on purpose: a 1.x client reads it as the server's version string and logs a readable
  "version mismatch" naming this protocol instead of hanging on garbage; and a 1.x server's own opening
  (its version string, such as ``1.7.8``) is recognised here and named.
* **Frames**: a 4-byte big-endian body length, a type byte, then the body.

The decoder is incremental: it accepts bytes in any split, one byte at a time included. A frame header is
checked against the size cap the moment its 5 bytes arrive, so an oversized frame is refused before any of
its body is buffered. Frames that arrive whole are handed out as views of the received bytes (no copy). A
large body (64 KiB and more) that arrives in pieces is copied exactly once: the pieces are kept as views
while they arrive (so memory grows with the bytes received, never with the length a header merely
announces) and joined into one buffer when the last one lands, or written straight into the buffer of an
earlier large frame that the caller has released. In that last case the owner, if it reads from a file
descriptor, may even read the rest of the body straight into that buffer (`recv_buffer()`): no copy at all.

This module does no I/O and keeps no clock: it only turns bytes into (type, body) pairs and back. It also
says how much the I/O layers should ask for per read (`READ_SIZE`, `next_read_size`), since that follows
from where the decoder starts reading large bodies in place.
"""

from __future__ import annotations

import struct
import sys

from .errors import DecodeError, FrameTooLarge, LegacyPeerError

__all__ = [
    "FRAME_HEADER",
    "MAGIC",
    "MAX_OPENING",
    "READ_SIZE",
    "READ_SIZE_BULK",
    "FrameDecoder",
    "Opening",
    "encode_frame_header",
    "encode_opening",
    "next_read_size",
    "opening_bytes",
    "parse_opening",
]

MAGIC = b"ppft-protocol/"
"""The first bytes of every opening text."""

MAX_OPENING = 256
"""Longest opening text accepted, in bytes."""

FRAME_HEADER = struct.Struct(">IB")
"""Frame header: body length (u32, big-endian), frame type (u8)."""

_OPENING_LEN = struct.Struct(">Q")
_LEGACY_PATTERN = rb"(\d+\.\d+(?:\.\d+)?[0-9A-Za-z.\-+]*)\Z"  # a ppft 1.x version string, such as 1.7.8
_LARGE = 64 * 1024
_KEEP_VIEW = 4096  # a piece of a large body at least this big is kept as a view until the body is whole
_SPARE_MAX = 256 * 1024 * 1024  # a finished large buffer bigger than this is never kept for reuse
# Buffer reuse relies on CPython refusing to resize a bytearray that has live views (BufferError).
_REUSE_BUFFERS = sys.implementation.name == "cpython"

READ_SIZE = _LARGE
"""How much a read of a pipe or socket asks for, everywhere in ppft: a frame smaller than this (256 tiny
results fit) arrives whole in one read, and the body of a larger one is read in place, into the buffer it is
assembled in (`FrameDecoder.recv_buffer`). Not more: CPython allocates the whole requested size for every
`os.read` / `socket.recv` before shrinking it to what arrived, and glibc serves a request over its mmap
threshold (128 KiB) with mmap and munmap, a cost every small frame would pay on every hop
(`scripts/bench --only latency,tiny` shows it)."""

READ_SIZE_BULK = 1 << 20
"""What a read asks for while large frames stream in: the next frame then arrives in one read, and the
decoder keeps views into it rather than copying it into a buffer of its own; the allocation is small beside
the payload (`scripts/bench --only payload`)."""


def next_read_size(asked: int, got: int) -> int:
    """The size of the next read: bulk after a read that filled what it asked for (more is waiting), small
    again after one that got less than the small size (tiny frames are back)."""
    if got >= asked:
        return READ_SIZE_BULK
    if got < READ_SIZE:
        return READ_SIZE
    return asked


class Opening:
    """A peer's opening: the range of protocol versions it speaks and its free-text comment."""

    __slots__ = ("comment", "max_version", "min_version")

    def __init__(self, min_version: int, max_version: int, comment: str = "") -> None:
        self.min_version = min_version
        self.max_version = max_version
        self.comment = comment

    def __repr__(self) -> str:
        return f"Opening({self.min_version}, {self.max_version}, {self.comment!r})"


def encode_opening(min_version: int, max_version: int, comment: str) -> bytes:
    """The opening bytes announcing versions `min_version` to `max_version`."""
    if not 0 < min_version <= max_version < 100000:
        raise ValueError(f"bad version range {min_version}-{max_version}")
    text = MAGIC + f"{min_version}-{max_version} ({comment})".encode("ascii", "replace")
    if len(text) > MAX_OPENING:
        raise ValueError(f"opening text longer than {MAX_OPENING} bytes")
    return opening_bytes(text)


def opening_bytes(text: bytes) -> bytes:
    """The opening whose text is `text`, as it crossed the wire: its 8-byte length, then the text."""
    return _OPENING_LEN.pack(len(text)) + text


def parse_opening(text: bytes) -> Opening:
    """The peer's `Opening`, or `LegacyPeerError` for a ppft 1.x peer, or `DecodeError` for anything else.

    The opening is ``ppft-protocol/<min>-<max>``, each version 1 to 5 ASCII digits, then nothing or
    `` (<comment>)`` up to the end. It is parsed by hand: `re` (with `enum`, which it loads) is imported
    only to name what a refused opening was, so a local worker starts without it.
    """
    parsed = _parse_ppft_opening(text)
    if parsed is not None:
        low, high, comment = parsed
        if not 0 < low <= high:
            raise DecodeError(f"peer announced an empty protocol version range {low}-{high}")
        return Opening(low, high, comment.decode("ascii", "replace"))
    import re  # noqa: PLC0415 - only a refused opening pays for it

    legacy = re.match(_LEGACY_PATTERN, text)
    if legacy is not None:
        version = legacy.group(1).decode("ascii")
        raise LegacyPeerError(
            f"peer is a legacy ppft/pp {version} process, which speaks the ppft 1.x wire protocol, not "
            f"ppft-protocol; install ppft >= 2 (pip install -U ppft) on that node and restart its ppserver"
        )
    raise DecodeError(f"peer did not open with the ppft protocol: its first message was {text[:40]!r}")


def _parse_ppft_opening(text: bytes) -> tuple[int, int, bytes] | None:
    """(min, max, comment) of ``ppft-protocol/<min>-<max>[ (<comment>)]``, or None for any other text."""
    if not text.startswith(MAGIC):
        return None
    versions, space, comment = text[len(MAGIC) :].partition(b" ")
    if space:
        if len(comment) < 2 or comment[:1] != b"(" or comment[-1:] != b")":
            return None
        comment = comment[1:-1]
    low, dash, high = versions.partition(b"-")
    if not (dash and _is_version(low) and _is_version(high)):
        return None
    return int(low), int(high), comment


def _is_version(text: bytes) -> bool:
    return 0 < len(text) <= 5 and text.isdigit()  # bytes.isdigit: ASCII digits only


def encode_frame_header(frame_type: int, body_length: int) -> bytes:
    """The 5-byte header of a frame."""
    return FRAME_HEADER.pack(body_length, frame_type)


class FrameDecoder:
    """Incremental decoder: feed bytes, get back the opening text once, then (type, body) frames.

    `max_frame_size` caps a frame's body length; the owner lowers or raises it as the connection moves
    through its handshake (`set_limit`). Buffered memory never exceeds the cap plus one header.

    `single` mode hands out at most one frame per `feed`, holding the bytes after it unread until
    `pending()` (or the next `feed`) parses them under the cap in force by then: the handshake uses it so that
    the small pre-authentication cap switches to the large one exactly after the frame that authenticates.

    A large body (64 KiB and more) that arrives in pieces ends up in a buffer of its own; once the caller has
    released every view of a finished body, the next large frame is written into that buffer instead of a
    fresh one (no allocation, no page faults). Bodies are read-only to the caller: never write through them.
    While such a body is on its way into a reused buffer, `recv_buffer()` gives the part of that buffer still
    to be filled, for the caller to read into (`os.readv`, `socket.recv_into`) and report with
    `received_into(n)`.
    """

    __slots__ = (
        "_buf",
        "_held",
        "_large",
        "_large_fill",
        "_large_parts",
        "_large_size",
        "_large_type",
        "_limit",
        "_opening_done",
        "_spare",
        "authenticated",
        "single",
    )

    def __init__(self, max_frame_size: int) -> None:
        self._buf = bytearray()  # a partial header or an incomplete small frame (header already checked)
        self._held = b""  # single mode: bytes after the frame handed out, not parsed yet
        self._limit = max_frame_size
        self._opening_done = False
        self._large: bytearray | None = None  # a reused buffer the body is written into, if any
        self._large_parts: list[bytearray | memoryview] = []  # else the pieces received so far
        self._large_fill = 0
        self._large_size = 0  # nonzero while a large frame is being assembled
        self._large_type = 0
        self._spare: bytearray | None = None
        self.authenticated = False
        self.single = False

    def set_limit(self, max_frame_size: int) -> None:
        """Change the frame size cap (for frames whose header has not been parsed yet)."""
        self._limit = max_frame_size

    @property
    def limit(self) -> int:
        """The frame size cap in force."""
        return self._limit

    @property
    def buffered(self) -> int:
        """Bytes held, waiting for the rest of their frame (or, in single mode, for `pending()`)."""
        return len(self._buf) + len(self._held) + self._large_fill

    @property
    def in_frame(self) -> bool:
        """True while part of a frame (or of the opening) has arrived but not all of it."""
        return bool(self._buf) or bool(self._held) or self._large_size != 0

    def feed_opening(self, data: bytes | memoryview) -> tuple[bytes | None, memoryview]:
        """Consume the opening from `data`: (opening text or None while incomplete, bytes left over).

        Only the opening's own bytes are buffered; the rest of `data` is returned as a view, uncopied.
        """
        view = _byte_view(data)
        buf = self._buf
        if len(buf) < 8:
            take = 8 - len(buf)
            buf += view[:take]
            view = view[take:]
            if len(buf) < 8:
                return None, view
            (length,) = _OPENING_LEN.unpack_from(buf, 0)
            if length == 0 or length > MAX_OPENING:
                raise DecodeError(
                    f"peer did not open with the ppft protocol: its first 8 bytes {bytes(buf)!r} "
                    f"are not the length of an opening (1..{MAX_OPENING})"
                )
        (length,) = _OPENING_LEN.unpack_from(buf, 0)
        take = 8 + length - len(buf)
        buf += view[:take]
        view = view[take:]
        if len(buf) < 8 + length:
            return None, view
        text = bytes(buf[8:])
        buf.clear()
        self._opening_done = True
        return text, view

    def feed(self, data: bytes | memoryview) -> list[tuple[int, memoryview]]:
        """Consume `data` and return every frame it completes, in order, as (type, body).

        Bodies may be views of `data` itself: pass immutable bytes, or do not reuse the buffer while a
        body (or a message decoded from it) is alive.
        """
        frames: list[tuple[int, memoryview]] = []
        if self._held:
            data = self._held + data
            self._held = b""
        view = _byte_view(data)
        buf = self._buf
        single = self.single
        while view:
            if single and frames:
                self._held = bytes(view)  # parsed later, by `pending()`, under the cap in force then
                break
            if self._large_size:
                view = self._fill_large(view, frames)
            elif buf:
                view = self._fill_small(view, frames)
            else:
                # Fast path: frames parsed straight out of the received chunk, no copy at all.
                view = self._parse(view, frames)
                if view and not self._large_size and not (single and frames):
                    buf += view  # a partial header, or an incomplete small frame (under 64 KiB)
                    break
        return frames

    def recv_buffer(self) -> memoryview | None:
        """The rest of the large body on its way into a reused buffer, as a writable view to read into.

        Fill a prefix of it, release the view, then call `received_into` with the number of bytes written:
        the body is then assembled without a copy. The view never reaches past the body, so a read into it
        cannot swallow the next frame. None when no such body is on its way (none at all, or one kept in
        pieces because no released buffer fits it): then read as usual and `feed`. No buffer is ever
        allocated here: memory still grows only with the bytes received.
        """
        large = self._large
        if large is None or self._held:
            return None
        return memoryview(large)[self._large_fill : self._large_size]

    def received_into(self, n: int) -> list[tuple[int, memoryview]]:
        """The frame (if any) completed by `n` bytes just written into the view `recv_buffer` gave."""
        if self._large is None or not 0 <= n <= self._large_size - self._large_fill:
            raise ValueError(f"received_into({n}) does not match the buffer recv_buffer() gave")
        frames: list[tuple[int, memoryview]] = []
        self._large_fill += n
        if self._large_fill == self._large_size:
            self._finish_large(frames)
        return frames

    def pending(self) -> list[tuple[int, memoryview]]:
        """Frames completed by bytes already received (after `single` mode held them back)."""
        if not self._held:
            return []
        data = self._held
        self._held = b""
        return self.feed(data)

    def _check(self, length: int) -> None:
        if length > self._limit:
            raise FrameTooLarge(length, self._limit, self.authenticated)

    def _parse(self, view: memoryview, frames: list[tuple[int, memoryview]]) -> memoryview:
        off = 0
        end = len(view)
        unpack = FRAME_HEADER.unpack_from
        limit = self._limit
        while end - off >= 5:
            length, ftype = unpack(view, off)
            if length > limit:
                self._check(length)
            body_start = off + 5
            if end - body_start >= length:
                frames.append((ftype, view[body_start : body_start + length]))
                off = body_start + length
                if self.single:
                    break
            elif length >= _LARGE:
                self._start_large(ftype, length)
                return view[body_start:]
            else:
                break
        return view[off:]

    def _start_large(self, ftype: int, length: int) -> None:
        self._large = self._reusable(length)
        self._large_size = length
        self._large_type = ftype
        self._large_fill = 0

    def _reusable(self, length: int) -> bytearray | None:
        """The previous large buffer, if it fits `length` and nothing outside refers to it any more."""
        spare = self._spare
        if spare is None:
            return None
        self._spare = None
        if not length <= len(spare) <= 2 * length:
            return None
        try:
            # A bytearray cannot change size while a view of it exists: a size change that is undone
            # at once (no reallocation either way) tells whether the caller still holds a body in it.
            spare.pop()
            spare.append(0)
        except BufferError:
            return None
        return spare

    def _fill_small(self, view: memoryview, frames: list[tuple[int, memoryview]]) -> memoryview:
        buf = self._buf
        if len(buf) < 5:
            need = 5 - len(buf)
            buf += view[:need]
            view = view[need:]
            if len(buf) < 5:
                return view
            length, ftype = FRAME_HEADER.unpack_from(buf, 0)
            self._check(length)
            if length >= _LARGE:
                buf.clear()
                self._start_large(ftype, length)
                return view
        length, ftype = FRAME_HEADER.unpack_from(buf, 0)
        need = 5 + length - len(buf)
        buf += view[:need]
        view = view[need:]
        if len(buf) == 5 + length:
            frame = bytes(buf)
            buf.clear()
            frames.append((ftype, memoryview(frame)[5:]))
        return view

    def _fill_large(self, view: memoryview, frames: list[tuple[int, memoryview]]) -> memoryview:
        fill = self._large_fill
        size = self._large_size
        take = min(len(view), size - fill)
        piece = view[:take]
        large = self._large
        if large is not None:
            large[fill : fill + take] = piece
        elif take >= _KEEP_VIEW and piece.readonly:
            self._large_parts.append(piece)  # a view of received `bytes`: kept, not copied
        else:
            # A writable view may be reused by the caller for its next read, so its bytes are taken now;
            # small pieces are gathered too, so a peer trickling bytes cannot pile up view objects.
            parts = self._large_parts
            if parts and type(parts[-1]) is bytearray:
                parts[-1] += piece
            else:
                parts.append(bytearray(piece))
        fill += take
        self._large_fill = fill
        if fill == size:
            self._finish_large(frames)
        return view[take:]

    def _finish_large(self, frames: list[tuple[int, memoryview]]) -> None:
        size = self._large_size
        large = self._large
        if large is None:
            large = bytearray().join(self._large_parts)  # the one copy
            self._large_parts = []
        body = memoryview(large)
        frames.append((self._large_type, body if len(large) == size else body[:size]))
        self._large = None
        self._large_fill = 0
        self._large_size = 0
        if _REUSE_BUFFERS and size <= _SPARE_MAX:
            self._spare = large


def _byte_view(data: bytes | memoryview) -> memoryview:
    view = memoryview(data)
    return view if view.format == "B" else view.cast("B")
