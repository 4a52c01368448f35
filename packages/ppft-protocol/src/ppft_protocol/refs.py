"""Objects shipped once (protocol version 2): `Put`, `Release` and `PutRefused`, the messages of `put()`.

* `Put` (0x22) gives the receiver an object to hold under a 64-bit ref id: the object's pickle (a plain
  one, or a buffered pickle of `ppft_protocol.buffers` whose buffers travel uncopied), sent once per
  connection before the first job that may refer to it. A job refers to it inside its pickled arguments
  (`ppft_worker.process.refs.resolve(ref_id)`), so the job frames themselves do not change.
* `Release` (0x23) lets the receiver forget ref ids it holds (unknown ids are ignored).
* `PutRefused` (0x35) says that the sender will not hold a ref, and why (its memory, its cap on refs): a
  node answers a `Put` with it, and a node tells its own workers so, so that a job needing that ref fails
  with that reason.

All three exist only in version 2: a version-1 connection refuses them both ways, and a sender never sends
them to a version-1 peer. This module never unpickles anything and does no I/O.
"""

from __future__ import annotations

from .buffers import Pickled
from .codec import U32, U64, Blob, Message, Reader, put_blob, put_str, put_u64s

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import ClassVar

__all__ = ["Put", "PutRefused", "Release"]

_set = object.__setattr__


class Put(Message):
    """Hold `data` (a pickle, opaque here) under `ref_id` until a `Release` names it."""

    __slots__ = ("data", "ref_id")
    __match_args__ = ("ref_id", "data")
    TYPE: ClassVar[int] = 0x22
    SINCE: ClassVar[int] = 2

    ref_id: int
    data: Blob | Pickled

    def __init__(self, ref_id: int, data: Blob | Pickled) -> None:
        _set(self, "ref_id", ref_id)
        _set(self, "data", data)

    def _encode(self, parts: list[bytes | memoryview]) -> None:
        parts.append(U64.pack(self.ref_id))
        data = self.data
        if data.__class__ is Pickled:  # a buffered pickle: its buffers as their own parts, uncopied
            parts.append(U32.pack(len(data)))
            parts.extend(data.parts())
        else:
            put_blob(parts, data)  # type: ignore[arg-type]  # the payload as its own part, uncopied

    @classmethod
    def _decode(cls, r: Reader) -> Put:
        return cls(r.u64("ref_id"), r.blob("data"))


class Release(Message):
    """Forget these ref ids (ids not held are ignored)."""

    __slots__ = ("ref_ids",)
    __match_args__ = ("ref_ids",)
    TYPE: ClassVar[int] = 0x23
    SINCE: ClassVar[int] = 2

    ref_ids: tuple[int, ...]

    def __init__(self, ref_ids: tuple[int, ...]) -> None:
        _set(self, "ref_ids", ref_ids)

    def _encode(self, parts: list[bytes | memoryview]) -> None:
        put_u64s(parts, self.ref_ids)

    @classmethod
    def _decode(cls, r: Reader) -> Release:
        return cls(r.u64s("ref_ids"))


class PutRefused(Message):
    """The sender does not hold `ref_id`, because of `reason` (text for people: escape it to show it)."""

    __slots__ = ("reason", "ref_id")
    __match_args__ = ("ref_id", "reason")
    TYPE: ClassVar[int] = 0x35
    SINCE: ClassVar[int] = 2

    ref_id: int
    reason: str

    def __init__(self, ref_id: int, reason: str) -> None:
        _set(self, "ref_id", ref_id)
        _set(self, "reason", reason)

    def _encode(self, parts: list[bytes | memoryview]) -> None:
        parts.append(U64.pack(self.ref_id))
        put_str(parts, self.reason)

    @classmethod
    def _decode(cls, r: Reader) -> PutRefused:
        return cls(r.u64("ref_id"), r.text("reason"))
