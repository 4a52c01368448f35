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
its body is buffered. A large body is copied exactly once, from the received chunks into one buffer of the
announced size; frames are handed out as `memoryview`s of that buffer.

This module does no I/O and keeps no clock: it only turns bytes into (type, body) pairs and back.
"""

from __future__ import annotations

import re
import struct

from .errors import DecodeError, FrameTooLarge, LegacyPeerError

__all__ = [
    "FRAME_HEADER",
    "MAGIC",
    "MAX_OPENING",
    "FrameDecoder",
    "Opening",
    "encode_frame_header",
    "encode_opening",
    "parse_opening",
]

MAGIC = b"ppft-protocol/"
"""The first bytes of every opening text."""

MAX_OPENING = 256
"""Longest opening text accepted, in bytes."""

FRAME_HEADER = struct.Struct(">IB")
"""Frame header: body length (u32, big-endian), frame type (u8)."""

_OPENING_LEN = struct.Struct(">Q")
_OPENING_RE = re.compile(rb"ppft-protocol/(\d{1,5})-(\d{1,5})(?: \((.*)\))?\Z", re.DOTALL)
_LEGACY_RE = re.compile(rb"(\d+\.\d+(?:\.\d+)?[0-9A-Za-z.\-+]*)\Z")
_LARGE = 64 * 1024


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
    return _OPENING_LEN.pack(len(text)) + text


def parse_opening(text: bytes) -> Opening:
    """The peer's `Opening`, or `LegacyPeerError` for a ppft 1.x peer, or `DecodeError` for anything else."""
    match = _OPENING_RE.match(text)
    if match is not None:
        low, high = int(match.group(1)), int(match.group(2))
        if not 0 < low <= high:
            raise DecodeError(f"peer announced an empty protocol version range {low}-{high}")
        comment = (match.group(3) or b"").decode("ascii", "replace")
        return Opening(low, high, comment)
    legacy = _LEGACY_RE.match(text)
    if legacy is not None:
        version = legacy.group(1).decode("ascii")
        raise LegacyPeerError(
            f"peer is a legacy ppft/pp {version} process, which speaks the ppft 1.x wire protocol, not "
            f"ppft-protocol; install ppft >= 2 (pip install -U ppft) on that node and restart its ppserver"
        )
    raise DecodeError(f"peer did not open with the ppft protocol: its first message was {text[:40]!r}")


def encode_frame_header(frame_type: int, body_length: int) -> bytes:
    """The 5-byte header of a frame."""
    return FRAME_HEADER.pack(body_length, frame_type)


class FrameDecoder:
    """Incremental decoder: feed bytes, get back the opening text once, then (type, body) frames.

    `max_frame_size` caps a frame's body length; the owner lowers or raises it as the connection moves
    through its handshake (`set_limit`). Buffered memory never exceeds the cap plus one header.
    """

    __slots__ = (
        "_buf",
        "_large",
        "_large_fill",
        "_large_type",
        "_limit",
        "_opening_done",
        "authenticated",
        "single",
    )

    def __init__(self, max_frame_size: int) -> None:
        self._buf = bytearray()
        self._limit = max_frame_size
        self._opening_done = False
        self._large: bytearray | None = None
        self._large_fill = 0
        self._large_type = 0
        self.authenticated = False
        self.single = False  # hand out one frame per call (while the cap may change after each frame)

    def set_limit(self, max_frame_size: int) -> None:
        """Change the frame size cap (for frames whose header has not arrived yet)."""
        self._limit = max_frame_size

    @property
    def buffered(self) -> int:
        """Bytes held, waiting for the rest of their frame."""
        return len(self._buf) + (self._large_fill if self._large is not None else 0)

    @property
    def in_frame(self) -> bool:
        """True while part of a frame (or of the opening) has arrived but not all of it."""
        return bool(self._buf) or self._large is not None

    def feed_opening(self, data: bytes | memoryview) -> tuple[bytes | None, memoryview]:
        """Consume the opening from `data`: (opening text or None while incomplete, bytes left over)."""
        buf = self._buf
        buf += data
        if len(buf) < 8:
            return None, memoryview(b"")
        (length,) = _OPENING_LEN.unpack_from(buf, 0)
        if length == 0 or length > MAX_OPENING:
            raise DecodeError(
                f"peer did not open with the ppft protocol: its first 8 bytes {bytes(buf[:8])!r} "
                f"are not the length of an opening"
            )
        if len(buf) < 8 + length:
            return None, memoryview(b"")
        text = bytes(buf[8 : 8 + length])
        rest = memoryview(bytes(buf[8 + length :]))
        buf.clear()
        self._opening_done = True
        return text, rest

    def feed(self, data: bytes | memoryview) -> list[tuple[int, memoryview]]:
        """Consume `data` and return every frame it completes, in order, as (type, body).

        Bodies may be views of `data` itself: pass immutable bytes, or do not reuse the buffer.
        """
        frames: list[tuple[int, memoryview]] = []
        view = memoryview(data)
        buf = self._buf
        while view:
            if self._large is not None:
                view = self._fill_large(view, frames)
            elif buf:
                view = self._fill_small(view, frames)
            else:
                # Fast path: frames parsed straight out of the received chunk, no copy at all.
                view = self._parse(view, frames)
                if view and self._large is None:
                    buf += view  # an incomplete small frame (under 64 KiB) or a partial header
                    break
            if self.single and frames:
                buf[:0] = view  # keep the rest, unread, for `pending()`
                break
        return frames

    def pending(self) -> list[tuple[int, memoryview]]:
        """Frames completed by bytes already buffered (after `single` mode held them back)."""
        if self._large is not None or len(self._buf) < 5:
            return []
        data = bytes(self._buf)
        self._buf.clear()
        return self.feed(data)

    def _check(self, length: int) -> None:
        if length > self._limit:
            raise FrameTooLarge(length, self._limit, self.authenticated)

    def _parse(self, view: memoryview, frames: list[tuple[int, memoryview]]) -> memoryview:
        off = 0
        end = len(view)
        unpack = FRAME_HEADER.unpack_from
        while end - off >= 5:
            length, ftype = unpack(view, off)
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
        self._large = bytearray(length)
        self._large_type = ftype
        self._large_fill = 0

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
            frames.append((ftype, memoryview(bytes(buf[5:]))))
            buf.clear()
        return view

    def _fill_large(self, view: memoryview, frames: list[tuple[int, memoryview]]) -> memoryview:
        large = self._large
        assert large is not None
        fill = self._large_fill
        take = min(len(view), len(large) - fill)
        large[fill : fill + take] = view[:take]
        self._large_fill = fill + take
        if self._large_fill == len(large):
            frames.append((self._large_type, memoryview(large)))
            self._large = None
            self._large_fill = 0
        return view[take:]
