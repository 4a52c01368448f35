"""Direct worker links (protocol version 2): `Attach`, `Attached` and `EndDirect`.

A client that sends jobs to a ppserver can have some of them go straight to a worker process on the
ppserver's machine, over a connection of their own, so that a job crosses two processes instead of four:

* `Attach` (0x24) is the first message a client sends on a new connection to a ppserver, once established:
  "give this connection to one of your workers". It sends nothing more until the answer.
* `Attached` (0x36) is the ppserver's answer when it agrees, and the last frame it writes on that
  connection: it then hands the socket to a new worker process, which runs a new handshake with the client
  (it proves the same secret) and speaks the worker's side of the protocol on it. `direct_id` names that
  worker to the ppserver (`EndDirect`). A ppserver that does not agree sends `Bye` with the reason.
* `EndDirect` (0x25) goes on a client's main connection to the ppserver: stop these direct workers now
  (a job running there is the reason: a worker reads nothing while it runs a job). Ids the ppserver does
  not know are ignored.

All three exist only in version 2: a version-1 connection refuses them both ways. This module does no I/O.
"""

from __future__ import annotations

from .codec import U64, Message, Reader, put_u64s

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import ClassVar

__all__ = ["Attach", "Attached", "EndDirect"]

_set = object.__setattr__


class Attach(Message):
    """Hand this connection to a worker (the first message on it; nothing follows until the answer)."""

    __slots__ = ()
    TYPE: ClassVar[int] = 0x24
    SINCE: ClassVar[int] = 2


class Attached(Message):
    """The connection now belongs to a worker, known to the ppserver as `direct_id`: a new handshake
    follows, the client speaking first. The ppserver writes nothing after this frame."""

    __slots__ = ("direct_id",)
    __match_args__ = ("direct_id",)
    TYPE: ClassVar[int] = 0x36
    SINCE: ClassVar[int] = 2

    direct_id: int

    def __init__(self, direct_id: int) -> None:
        _set(self, "direct_id", direct_id)

    def _encode(self, parts: list[bytes | memoryview]) -> None:
        parts.append(U64.pack(self.direct_id))

    @classmethod
    def _decode(cls, r: Reader) -> Attached:
        return cls(r.u64("direct_id"))


class EndDirect(Message):
    """Stop the direct workers named by these ids (from `Attached`), even while they run a job."""

    __slots__ = ("direct_ids",)
    __match_args__ = ("direct_ids",)
    TYPE: ClassVar[int] = 0x25
    SINCE: ClassVar[int] = 2

    direct_ids: tuple[int, ...]

    def __init__(self, direct_ids: tuple[int, ...]) -> None:
        _set(self, "direct_ids", direct_ids)

    def _encode(self, parts: list[bytes | memoryview]) -> None:
        put_u64s(parts, self.direct_ids)

    @classmethod
    def _decode(cls, r: Reader) -> EndDirect:
        return cls(r.u64s("direct_ids"))
