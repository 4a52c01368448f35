"""The messages of the ppft protocol, their one binary encoding, and the table of frame types.

Every message is an immutable `Message` (ppft_protocol.codec) with a fixed frame type byte (`TYPE`); its
fields are listed, in order, in `__match_args__`. Control fields have a fixed, documented encoding
(docs/protocol.md, "Messages"); pickled values are opaque byte fields: this module never unpickles anything.

The handshake and control messages live here; the job and result batches, the messages of the hot path,
live in `ppft_protocol.batches` and are importable from here too. `MESSAGE_TYPES` is the one table of frame
types both directions use, and `encode_message` / `decode_message` the two ends of the encoding. The two
events a `Connection` gives besides messages, `Established` and `Closed`, are records of the same kind and
end this module; `Event` names every event.
"""

from __future__ import annotations

from .batches import Job, JobBatch, Result, ResultBatch
from .channel import CHACHA20_POLY1305
from .codec import (
    F64,
    LATEST,
    U8,
    U32,
    U64,
    Blob,
    JobIdsMessage,
    Message,
    Reader,
    Record,
    put_blob,
    put_str,
    put_strs,
)
from .direct import Attach, Attached, EndDirect
from .errors import DecodeError
from .limits import JobLimits, Terminate
from .live import LiveOutput, WatchOutput
from .refs import Put, PutRefused, Release

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import ClassVar

__all__ = [
    "MESSAGE_TYPES",
    "Attach",
    "Attached",
    "Auth",
    "AuthFailed",
    "AuthOk",
    "Blob",
    "Bye",
    "Cancel",
    "Closed",
    "EndDirect",
    "Established",
    "Event",
    "FunctionBody",
    "Heartbeat",
    "Hello",
    "Job",
    "JobBatch",
    "JobLimits",
    "LiveOutput",
    "Message",
    "NodeInfo",
    "Put",
    "PutRefused",
    "Release",
    "Result",
    "ResultBatch",
    "StatsReply",
    "StatsRequest",
    "Terminate",
    "WatchOutput",
    "decode_message",
    "encode_message",
]

_set = object.__setattr__


# Handshake messages: the only ones accepted before the peer is authenticated.


class Hello(Message):
    """Each side's fresh 32-byte nonce and its option flags (bit 0: agrees to an unsealed channel; bit 1:
    seals with AES-256-GCM at hardware speed; bit 2: speaks protocol version 2 or later, the downgrade
    sentinel; bit 3, version 2: the connecting side is a dial-in worker and proves the server's workers
    secret). Unknown bits are kept, not refused: they are part of the proofs, and a newer peer's flag means
    nothing to an older one."""

    __slots__ = ("flags", "nonce")
    __match_args__ = ("nonce", "flags")
    TYPE: ClassVar[int] = 0x01
    FLAG_ALLOW_PLAIN: ClassVar[int] = 0x01
    FLAG_AES_GCM: ClassVar[int] = 0x02
    FLAG_SPEAKS_V2: ClassVar[int] = 0x04
    FLAG_WORKER: ClassVar[int] = 0x08

    nonce: bytes
    flags: int

    def __init__(self, nonce: bytes, flags: int = 0) -> None:
        _set(self, "nonce", nonce)
        _set(self, "flags", flags)

    def _encode(self, parts: list[bytes | memoryview]) -> None:
        parts.append(self.nonce)
        parts.append(U8.pack(self.flags))

    @classmethod
    def _decode(cls, r: Reader) -> Hello:
        return cls(r.raw(32, "nonce"), r.u8("flags"))


class _Proof(Message):
    """A side's 32-byte proof that it knows the secret (HMAC-SHA256): the one field of `Auth` and `AuthOk`,
    which differ only in their frame type."""

    __slots__ = ("proof",)
    __match_args__ = ("proof",)

    proof: bytes

    def __init__(self, proof: bytes) -> None:
        _set(self, "proof", proof)

    def _encode(self, parts: list[bytes | memoryview]) -> None:
        parts.append(self.proof)

    @classmethod
    def _decode(cls, r: Reader) -> _Proof:
        return cls(r.raw(32, "proof"))


class Auth(_Proof):
    """The client's proof that it knows the secret (HMAC-SHA256, 32 bytes)."""

    __slots__ = ()
    TYPE: ClassVar[int] = 0x02


class AuthOk(_Proof):
    """The server accepted the client's proof; carries the server's own proof."""

    __slots__ = ()
    TYPE: ClassVar[int] = 0x03


class AuthFailed(Message):
    """The server refused the client's proof. The server closes right after sending it."""

    __slots__ = ("reason",)
    __match_args__ = ("reason",)
    TYPE: ClassVar[int] = 0x04

    reason: str

    def __init__(self, reason: str = "authentication failed: the secrets differ") -> None:
        _set(self, "reason", reason)

    def _encode(self, parts: list[bytes | memoryview]) -> None:
        put_str(parts, self.reason)

    @classmethod
    def _decode(cls, r: Reader) -> AuthFailed:
        return cls(r.text("reason"))


# Messages of an established connection. Either side may send any of them (a dial-in worker initiates the
# connection but receives jobs), so the state machine does not restrict them by role.


class NodeInfo(Message):
    """What a peer is: `kind` ("client", "server" or "worker"), its worker count, software version, name;
    and, from protocol version 2: `python`, the Python it runs jobs with, e.g. "CPython 3.13.0" (bytecode
    pickled by one Python runs on no other major.minor), and `page`, the address of its status page
    ("http://HOST:PORT/", HOST as it listens, which may be 0.0.0.0 or [::]). Each is "" when the peer says
    none; a version-1 connection carries neither."""

    __slots__ = ("kind", "name", "page", "python", "version", "workers")
    __match_args__ = ("kind", "workers", "version", "name", "python", "page")
    TYPE: ClassVar[int] = 0x10

    kind: str
    workers: int
    version: str
    name: str
    python: str
    page: str

    def __init__(
        self, kind: str, workers: int, version: str, name: str, python: str = "", page: str = ""
    ) -> None:
        _set(self, "kind", kind)
        _set(self, "workers", workers)
        _set(self, "version", version)
        _set(self, "name", name)
        _set(self, "python", python)
        _set(self, "page", page)

    def _encode(self, parts: list[bytes | memoryview]) -> None:
        self._encode_older(parts, 1)
        put_str(parts, self.python)
        put_str(parts, self.page)

    def _encode_older(self, parts: list[bytes | memoryview], version: int) -> None:
        put_str(parts, self.kind)
        parts.append(U32.pack(self.workers))
        put_str(parts, self.version)
        put_str(parts, self.name)

    @classmethod
    def _decode(cls, r: Reader) -> NodeInfo:
        kind, workers, version, name = r.text("kind"), r.u32("workers"), r.text("version"), r.text("name")
        if r.version < 2:
            return cls(kind, workers, version, name)
        return cls(kind, workers, version, name, r.text("python"), r.text("page"))


class FunctionBody(Message):
    """A function, sent once per connection and then referred to by `digest` (SHA-256 of the body).

    Either `sources` holds source texts (the function itself last, its depfuncs before it) and `name` is
    the name the function has once they are executed, or `pickled` holds a pickled callable (a lambda typed
    in a REPL, a closure, a builtin) and `sources` holds only depfuncs. `imports` are the job's modules: a
    bare module name ("math", "os.path") or a whole import line ("from os import path", "import numpy as np").
    """

    __slots__ = ("digest", "imports", "name", "pickled", "sources")
    __match_args__ = ("digest", "name", "sources", "imports", "pickled")
    TYPE: ClassVar[int] = 0x20

    digest: bytes
    name: str
    sources: tuple[str, ...]
    imports: tuple[str, ...]
    pickled: bytes

    def __init__(
        self,
        digest: bytes,
        name: str,
        sources: tuple[str, ...] = (),
        imports: tuple[str, ...] = (),
        pickled: bytes = b"",
    ) -> None:
        _set(self, "digest", digest)
        _set(self, "name", name)
        _set(self, "sources", sources)
        _set(self, "imports", imports)
        _set(self, "pickled", pickled)

    def _encode(self, parts: list[bytes | memoryview]) -> None:
        parts.append(self.digest)
        put_str(parts, self.name)
        put_strs(parts, self.sources)
        put_strs(parts, self.imports)
        put_blob(parts, self.pickled)

    @classmethod
    def _decode(cls, r: Reader) -> FunctionBody:
        digest = r.raw(32, "digest")
        name = r.text("name")
        sources = r.texts("sources")
        imports = r.texts("imports")
        return cls(digest, name, sources, imports, bytes(r.blob("pickled")))


class Cancel(JobIdsMessage):
    """Cancel these jobs if they have not started; a job already running finishes and reports normally."""

    __slots__ = ()
    TYPE: ClassVar[int] = 0x40


class StatsRequest(Message):
    """Ask the peer for a `StatsReply`."""

    __slots__ = ()
    TYPE: ClassVar[int] = 0x50


class StatsReply(Message):
    """A node's counters: jobs finished, the sum of their wall times, workers, connected clients."""

    __slots__ = ("clients", "job_time", "jobs_done", "workers")
    __match_args__ = ("jobs_done", "job_time", "workers", "clients")
    TYPE: ClassVar[int] = 0x51

    jobs_done: int
    job_time: float
    workers: int
    clients: int

    def __init__(self, jobs_done: int, job_time: float, workers: int, clients: int) -> None:
        _set(self, "jobs_done", jobs_done)
        _set(self, "job_time", job_time)
        _set(self, "workers", workers)
        _set(self, "clients", clients)

    def _encode(self, parts: list[bytes | memoryview]) -> None:
        parts.append(U64.pack(self.jobs_done))
        parts.append(F64.pack(self.job_time))
        parts.append(U32.pack(self.workers))
        parts.append(U32.pack(self.clients))

    @classmethod
    def _decode(cls, r: Reader) -> StatsReply:
        return cls(r.u64("jobs_done"), r.f64("job_time"), r.u32("workers"), r.u32("clients"))


class Heartbeat(Message):
    """Sent by a side with nothing else to send, so the peer can tell silence from a dead link."""

    __slots__ = ()
    TYPE: ClassVar[int] = 0x60


class Bye(Message):
    """An orderly close, with the reason (shown to the peer's user): nothing follows it."""

    __slots__ = ("reason",)
    __match_args__ = ("reason",)
    TYPE: ClassVar[int] = 0x70

    reason: str

    def __init__(self, reason: str = "") -> None:
        _set(self, "reason", reason)

    def _encode(self, parts: list[bytes | memoryview]) -> None:
        put_str(parts, self.reason)

    @classmethod
    def _decode(cls, r: Reader) -> Bye:
        return cls(r.text("reason"))


MESSAGE_TYPES: dict[int, type[Message]] = {
    cls.TYPE: cls
    for cls in (
        Hello,
        Auth,
        AuthOk,
        AuthFailed,
        NodeInfo,
        FunctionBody,
        JobBatch,
        ResultBatch,
        LiveOutput,
        WatchOutput,
        JobLimits,
        Terminate,
        Put,
        Release,
        PutRefused,
        Attach,
        Attached,
        EndDirect,
        Cancel,
        StatsRequest,
        StatsReply,
        Heartbeat,
        Bye,
    )
}
"""Frame type byte -> message class: the one table both directions use."""

_DECODERS: dict[int, Callable[[Reader], Message]] = {t: cls._decode for t, cls in MESSAGE_TYPES.items()}


def encode_message(message: Message, version: int = LATEST) -> list[bytes | memoryview]:
    """The frame body of `message` in protocol `version`'s layout, as a list of parts to be written out
    without joining large payloads; a `ValueError` for a message that `version` does not have."""
    parts: list[bytes | memoryview] = []
    if version >= LATEST:
        message._encode(parts)
        return parts
    if version < message.SINCE:
        raise ValueError(
            f"{type(message).__name__} exists from protocol version {message.SINCE} on, and this connection "
            f"speaks version {version} (the peer is older): check the version before sending it"
        )
    message._encode_older(parts, version)
    return parts


def decode_message(frame_type: int, body: memoryview, version: int = LATEST) -> Message:
    """The message in a frame body received on a connection of protocol `version`; a `DecodeError` for an
    unknown type (or one `version` does not have) or a malformed body."""
    decoder = _DECODERS.get(frame_type)
    if decoder is None:
        raise DecodeError(f"unknown frame type 0x{frame_type:02x}")
    cls = MESSAGE_TYPES[frame_type]
    if version < cls.SINCE:
        raise DecodeError(
            f"frame type 0x{frame_type:02x} ({cls.__name__}) exists from protocol version {cls.SINCE} on, "
            f"and this connection speaks version {version}"
        )
    r = Reader(body, cls.__name__, version)
    message = decoder(r)
    r.finish()
    return message


# -- the events a Connection gives besides the peer's messages ------------------------------------------


class Established(Record):
    """The handshake finished: both sides proved the secret. Messages may be sent from now on.

    `cipher` names the sealed channel's AEAD (`"chacha20-poly1305"` or `"aes-256-gcm"`), `""` when unsealed.
    Left out, it is what a sealed channel used before AES-256-GCM was negotiable, so
    `Established(1, True, comment)` still means a ChaCha20-Poly1305 link."""

    __slots__ = ("cipher", "peer_comment", "sealed", "version")
    __match_args__ = ("version", "sealed", "peer_comment", "cipher")

    version: int
    sealed: bool
    peer_comment: str
    cipher: str

    def __init__(self, version: int, sealed: bool, peer_comment: str, cipher: str | None = None) -> None:
        if cipher is None:
            cipher = CHACHA20_POLY1305 if sealed else ""
        _set(self, "version", version)
        _set(self, "sealed", sealed)
        _set(self, "peer_comment", peer_comment)
        _set(self, "cipher", cipher)


class Closed(Record):
    """The peer closed the connection cleanly (after `Bye`, or at a frame boundary).

    `reason` is for logs and people: a `Bye`'s reason arrives escaped and bounded (`printable`); the `Bye`
    event before it carries the reason as sent."""

    __slots__ = ("reason",)
    __match_args__ = ("reason",)

    reason: str

    def __init__(self, reason: str) -> None:
        _set(self, "reason", reason)


Event = Message | Established | Closed
