"""Live output (protocol version 2): the text running jobs write, sent as they write it, to a peer that asks.

A side that sends jobs may ask the peer running them to send what those jobs write while they run
(`WatchOutput(True)`); the peer then sends `LiveOutput` frames, each with pieces of text of one or more of
that side's jobs (whole lines, mostly), each piece placed by its byte offset in its job's output, so the
receiver knows what it has seen when the job's result (which still carries the whole output) arrives. Both
messages exist only in version 2: a version-1 connection refuses them both ways.

This module never unpickles anything and does no I/O.
"""

from __future__ import annotations

import struct

from .codec import U8, U32, Message, Reader, put_str
from .errors import DecodeError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import ClassVar

__all__ = ["STDERR", "STDOUT", "LiveOutput", "WatchOutput"]

STDOUT = 1
STDERR = 2
_PIECE = struct.Struct(">QBQ")  # job id, stream, offset
_set = object.__setattr__


class LiveOutput(Message):
    """Text that running jobs wrote: `pieces` of `(job_id, stream, offset, text)`, in the order written.

    `stream` is `STDOUT` (1) or `STDERR` (2); `offset` is where `text` starts in the job's output, in bytes
    of its UTF-8 encoding (a receiver that saw less than `offset` bytes of that job missed some: the sender
    skipped what it could not keep up with)."""

    __slots__ = ("pieces",)
    __match_args__ = ("pieces",)
    TYPE: ClassVar[int] = 0x31
    SINCE: ClassVar[int] = 2

    pieces: tuple[tuple[int, int, int, str], ...]

    def __init__(self, pieces: tuple[tuple[int, int, int, str], ...]) -> None:
        _set(self, "pieces", pieces)

    def _encode(self, parts: list[bytes | memoryview]) -> None:
        parts.append(U32.pack(len(self.pieces)))
        pack = _PIECE.pack
        for job_id, stream, offset, text in self.pieces:
            if stream not in (STDOUT, STDERR):
                raise ValueError(f"job {job_id}: stream must be 1 (stdout) or 2 (stderr), not {stream}")
            parts.append(pack(job_id, stream, offset))
            put_str(parts, text)

    @classmethod
    def _decode(cls, r: Reader) -> LiveOutput:
        count = r.u32("count")
        if count * (_PIECE.size + 4) > r.end - r.off:
            raise DecodeError(f"live output: {count} pieces cannot fit in {r.end - r.off} bytes")
        pieces = []
        unpack = _PIECE.unpack_from
        for _ in range(count):
            off = r.need(_PIECE.size, "piece")
            job_id, stream, offset = unpack(r.mv, off)
            if stream not in (STDOUT, STDERR):
                raise DecodeError(f"live output: job {job_id} has unknown stream {stream}")
            pieces.append((job_id, stream, offset, r.text("text")))
        return cls(tuple(pieces))


class WatchOutput(Message):
    """Ask the peer to send `LiveOutput` for the jobs this side sends it (`on`), or to stop."""

    __slots__ = ("on",)
    __match_args__ = ("on",)
    TYPE: ClassVar[int] = 0x32
    SINCE: ClassVar[int] = 2

    on: bool

    def __init__(self, on: bool = True) -> None:
        _set(self, "on", bool(on))

    def _encode(self, parts: list[bytes | memoryview]) -> None:
        parts.append(U8.pack(1 if self.on else 0))

    @classmethod
    def _decode(cls, r: Reader) -> WatchOutput:
        on = r.u8("on")
        if on > 1:
            raise DecodeError(f"watch output: 'on' must be 0 or 1, not {on}")
        return cls(bool(on))
