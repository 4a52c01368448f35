"""The field encoding every message uses, and `Message`, the immutable base class of the messages.

Control fields have a fixed, documented encoding (docs/protocol.md, "Messages"): big-endian integers,
IEEE-754 doubles, strings as a u32 byte length plus UTF-8, byte strings as a u32 length plus the bytes, lists
as a u32 count plus the items. `Reader` takes fields out of one frame body; the `put_*` helpers append them
to a list of parts that is written out without joining large payloads.

`Record`, the base of messages and events, is hand-written rather than a frozen dataclass because a local
worker imports this package while its pool waits for it: `dataclasses` (which loads `inspect`) and the
creation of a dozen dataclasses cost more than the rest of the worker's start-up together. It keeps what the
dataclasses gave: fields in `__slots__` and `__match_args__`, in order; equality and hashing by type and
fields; a `Name(field=...)` repr; no attribute assignment after `__init__`.

This module never unpickles anything and does no I/O.
"""

from __future__ import annotations

import struct

from .errors import DecodeError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Sequence
    from typing import ClassVar, TypeAlias

__all__ = [
    "F64",
    "LARGE",
    "LATEST",
    "U8",
    "U16",
    "U32",
    "U64",
    "Blob",
    "JobIdsMessage",
    "Message",
    "Reader",
    "Record",
    "put_blob",
    "put_str",
    "put_strs",
    "put_u64s",
    "utf8",
]

Blob: TypeAlias = "bytes | memoryview"
"""An opaque byte field: `bytes` when small, a zero-copy `memoryview` of the frame when large."""

LARGE = 64 * 1024
"""Opaque fields of this many bytes and more are decoded as views of the frame, not copies."""

LATEST = 2
"""The latest protocol version, whose layouts `Message._encode` and the decoders give by default; a message
that changed since an older version encodes that version's layout in `Message._encode_older`."""

U8 = struct.Struct(">B")
U16 = struct.Struct(">H")
U32 = struct.Struct(">I")
U64 = struct.Struct(">Q")
F64 = struct.Struct(">d")


# -- encoding ---------------------------------------------------------------------------------------------


def put_str(parts: list[bytes | memoryview], text: str) -> None:
    data = text.encode("utf-8", "surrogatepass")
    parts.append(U32.pack(len(data)))
    parts.append(data)


def put_blob(parts: list[bytes | memoryview], data: Blob) -> None:
    parts.append(U32.pack(len(data)))
    parts.append(data)


def put_u64s(parts: list[bytes | memoryview], ids: Sequence[int]) -> None:
    """A list of ids: a u32 count, then that many u64 (job ids, ref ids, direct worker ids)."""
    parts.append(U32.pack(len(ids)))
    parts.append(struct.pack(f">{len(ids)}Q", *ids))


def put_strs(parts: list[bytes | memoryview], items: Sequence[str]) -> None:
    parts.append(U32.pack(len(items)))
    for item in items:
        put_str(parts, item)


# -- decoding ---------------------------------------------------------------------------------------------


class Reader:
    """Reads fields from one frame body; every overrun becomes a `DecodeError` naming the field.

    `version`: the protocol version of the connection the body came on (a decoder whose layout changed
    between versions reads it)."""

    __slots__ = ("end", "mv", "off", "version", "what")

    def __init__(self, mv: memoryview, what: str, version: int = LATEST) -> None:
        self.mv = mv
        self.off = 0
        self.end = len(mv)
        self.what = what
        self.version = version

    def need(self, n: int, field: str) -> int:
        """The offset of the next `n` bytes, which are consumed; a `DecodeError` if the frame is shorter."""
        off = self.off
        if n < 0 or off + n > self.end:
            raise DecodeError(
                f"{self.what}: field {field!r} needs {n} bytes at offset {off}, frame has {self.end}"
            )
        self.off = off + n
        return off

    def u8(self, field: str) -> int:
        off = self.need(1, field)
        return self.mv[off]

    def u16(self, field: str) -> int:
        off = self.need(2, field)
        return int(U16.unpack_from(self.mv, off)[0])

    def u32(self, field: str) -> int:
        off = self.need(4, field)
        return int(U32.unpack_from(self.mv, off)[0])

    def u64(self, field: str) -> int:
        off = self.need(8, field)
        return int(U64.unpack_from(self.mv, off)[0])

    def u64s(self, field: str) -> tuple[int, ...]:
        """A list of ids as `put_u64s` writes it."""
        count = self.u32("count")
        off = self.need(8 * count, field)
        return tuple(struct.unpack_from(f">{count}Q", self.mv, off))

    def f64(self, field: str) -> float:
        off = self.need(8, field)
        return float(F64.unpack_from(self.mv, off)[0])

    def whole_bytes(self) -> bytes | None:
        """The body as one `bytes` object to cut small fields from (a slice of `bytes` costs a third of a
        view and its copy): the very object the body views, or a copy of a small body (cheap
        per frame); None for a large body of another kind, whose large fields must stay views of it."""
        mv = self.mv
        obj = mv.obj
        if type(obj) is bytes and mv.c_contiguous and mv.nbytes == len(obj):
            return obj
        if self.end < LARGE:
            return mv.tobytes()
        return None

    def raw(self, n: int, field: str) -> bytes:
        off = self.need(n, field)
        return bytes(self.mv[off : off + n])

    def blob(self, field: str) -> Blob:
        n = self.u32(field)
        off = self.need(n, field)
        view = self.mv[off : off + n]
        return view if n >= LARGE else bytes(view)

    def text(self, field: str) -> str:
        n = self.u32(field)
        off = self.need(n, field)
        return utf8(self.mv[off : off + n], self.what, field)

    def texts(self, field: str) -> tuple[str, ...]:
        count = self.u32(field)
        self.need(0, field)
        if count > self.end - self.off:  # each item takes at least 4 bytes: refuse absurd counts early
            raise DecodeError(f"{self.what}: {field!r} claims {count} items in {self.end - self.off} bytes")
        return tuple(self.text(field) for _ in range(count))

    def finish(self) -> None:
        if self.off != self.end:
            raise DecodeError(f"{self.what}: {self.end - self.off} unexpected trailing bytes")


def utf8(view: memoryview, what: str, field: str) -> str:
    """`view` decoded as UTF-8 (lone surrogates allowed), or a `DecodeError` naming the message and field."""
    try:
        return str(view, "utf-8", "surrogatepass")
    except UnicodeDecodeError as exc:
        raise DecodeError(f"{what}: field {field!r} is not valid UTF-8 ({exc.reason})") from None


# -- immutable values -------------------------------------------------------------------------------------

_set = object.__setattr__


class Record:
    """An immutable value whose fields are `__match_args__`, in order: what a frozen dataclass gives.

    A subclass lists its fields in `__slots__` and `__match_args__` and sets them in `__init__` with
    `object.__setattr__`; assigning or deleting an attribute afterwards raises `AttributeError`. Equality
    and hashing go by type and fields, the repr is `Name(field=value, ...)`, and pickling and copying go
    through `__init__`.
    """

    __slots__ = ()
    __match_args__: ClassVar[tuple[str, ...]] = ()

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"cannot assign to field {name!r}: {type(self).__name__} is immutable")

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"cannot delete field {name!r}: {type(self).__name__} is immutable")

    def _values(self) -> tuple[object, ...]:
        return tuple([getattr(self, name) for name in self.__match_args__])

    def __eq__(self, other: object) -> bool:
        if other.__class__ is not self.__class__:
            return NotImplemented
        return self._values() == other._values()

    def __hash__(self) -> int:
        return hash(self._values())

    def __repr__(self) -> str:
        shown = ", ".join([f"{name}={getattr(self, name)!r}" for name in self.__match_args__])
        return f"{type(self).__qualname__}({shown})"

    def __reduce__(self) -> tuple[type[Record], tuple[object, ...]]:
        return type(self), self._values()


class Message(Record):
    """Base of all messages. `TYPE` is the frame type byte that carries it; `SINCE` the first protocol
    version that has it. `_encode` writes the latest version's layout, `_encode_older` an older version's
    (the same unless the message changed since)."""

    __slots__ = ()

    TYPE: ClassVar[int] = 0
    SINCE: ClassVar[int] = 1

    def _encode(self, parts: list[bytes | memoryview]) -> None:
        return None

    def _encode_older(self, parts: list[bytes | memoryview], version: int) -> None:
        self._encode(parts)

    @classmethod
    def _decode(cls, r: Reader) -> Message:
        return cls()


_set_field = object.__setattr__


class JobIdsMessage(Message):
    """Base of the messages whose body is a list of job ids (`Cancel`, `Terminate`): a u32 count, then
    that many u64 ids. Each subclass gives its `TYPE` (and `SINCE`) and what the ids ask for."""

    __slots__ = ("job_ids",)
    __match_args__ = ("job_ids",)

    job_ids: tuple[int, ...]

    def __init__(self, job_ids: tuple[int, ...]) -> None:
        _set_field(self, "job_ids", job_ids)

    def _encode(self, parts: list[bytes | memoryview]) -> None:
        put_u64s(parts, self.job_ids)

    @classmethod
    def _decode(cls, r: Reader) -> JobIdsMessage:
        return cls(r.u64s("job_ids"))
