"""The messages of the ppft protocol and their one binary encoding.

Every message is a frozen dataclass with a fixed frame type byte (`TYPE`). Control fields have a fixed,
documented encoding (docs/protocol.md, "Messages"): big-endian integers, IEEE-754 doubles, strings as a u32
byte length plus UTF-8, byte strings as a u32 length plus the bytes, lists as a u32 count plus the items.
Pickled values are opaque byte fields: this module never unpickles anything.

Jobs and results travel in batches (`JobBatch`, `ResultBatch`) because batching is the performance model:
one frame carries up to hundreds of tiny jobs, so per-job cost is a few struct calls, not a syscall.
The per-job entries (`Job`, `Result`) are `NamedTuple`s rather than dataclasses for the same reason: they
are built 100,000 times a second, and a named tuple is immutable, typed and several times cheaper to make.

Large opaque fields (64 KiB and more) are returned as `memoryview` slices of the received frame instead of
copies, so a 256 MiB result is never copied by the decoder; smaller ones are `bytes`.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import ClassVar, NamedTuple, TypeAlias

from .errors import DecodeError

__all__ = [
    "MESSAGE_TYPES",
    "Auth",
    "AuthFailed",
    "AuthOk",
    "Blob",
    "Bye",
    "Cancel",
    "FunctionBody",
    "Heartbeat",
    "Hello",
    "Job",
    "JobBatch",
    "Message",
    "NodeInfo",
    "Result",
    "ResultBatch",
    "StatsReply",
    "StatsRequest",
    "decode_message",
    "encode_message",
]

Blob: TypeAlias = "bytes | memoryview"
"""An opaque byte field: `bytes` when small, a zero-copy `memoryview` of the frame when large."""

_LARGE = 64 * 1024

_U8 = struct.Struct(">B")
_U16 = struct.Struct(">H")
_U32 = struct.Struct(">I")
_U64 = struct.Struct(">Q")
_F64 = struct.Struct(">d")
_JOB_HEAD = struct.Struct(">Q32sBI")  # job id, function digest, pickle protocol, args length
_RESULT_HEAD = struct.Struct(">QBddII")  # job id, status, wall, cpu, value length, output length


# -- encoding helpers -------------------------------------------------------------------------------------


def _str(parts: list[bytes | memoryview], text: str) -> None:
    data = text.encode("utf-8", "surrogatepass")
    parts.append(_U32.pack(len(data)))
    parts.append(data)


def _blob(parts: list[bytes | memoryview], data: Blob) -> None:
    parts.append(_U32.pack(len(data)))
    parts.append(data)


def _strs(parts: list[bytes | memoryview], items: Sequence[str]) -> None:
    parts.append(_U32.pack(len(items)))
    for item in items:
        _str(parts, item)


class _Reader:
    """Reads fields from one frame body; every overrun becomes a `DecodeError` naming the field."""

    __slots__ = ("end", "mv", "off", "what")

    def __init__(self, mv: memoryview, what: str) -> None:
        self.mv = mv
        self.off = 0
        self.end = len(mv)
        self.what = what

    def _need(self, n: int, field: str) -> int:
        off = self.off
        if n < 0 or off + n > self.end:
            raise DecodeError(
                f"{self.what}: field {field!r} needs {n} bytes at offset {off}, frame has {self.end}"
            )
        self.off = off + n
        return off

    def u8(self, field: str) -> int:
        off = self._need(1, field)
        return self.mv[off]

    def u16(self, field: str) -> int:
        off = self._need(2, field)
        return int(_U16.unpack_from(self.mv, off)[0])

    def u32(self, field: str) -> int:
        off = self._need(4, field)
        return int(_U32.unpack_from(self.mv, off)[0])

    def u64(self, field: str) -> int:
        off = self._need(8, field)
        return int(_U64.unpack_from(self.mv, off)[0])

    def f64(self, field: str) -> float:
        off = self._need(8, field)
        return float(_F64.unpack_from(self.mv, off)[0])

    def raw(self, n: int, field: str) -> bytes:
        off = self._need(n, field)
        return bytes(self.mv[off : off + n])

    def blob(self, field: str) -> Blob:
        n = self.u32(field)
        off = self._need(n, field)
        view = self.mv[off : off + n]
        return view if n >= _LARGE else bytes(view)

    def text(self, field: str) -> str:
        n = self.u32(field)
        off = self._need(n, field)
        return _utf8(self.mv[off : off + n], self.what, field)

    def texts(self, field: str) -> tuple[str, ...]:
        count = self.u32(field)
        self._need(0, field)
        if count > self.end - self.off:  # each item takes at least 4 bytes: refuse absurd counts early
            raise DecodeError(f"{self.what}: {field!r} claims {count} items in {self.end - self.off} bytes")
        return tuple(self.text(field) for _ in range(count))

    def finish(self) -> None:
        if self.off != self.end:
            raise DecodeError(f"{self.what}: {self.end - self.off} unexpected trailing bytes")


def _utf8(view: memoryview, what: str, field: str) -> str:
    try:
        return str(view, "utf-8", "surrogatepass")
    except UnicodeDecodeError as exc:
        raise DecodeError(f"{what}: field {field!r} is not valid UTF-8 ({exc.reason})") from None


# -- the messages -----------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Message:
    """Base of all messages. `TYPE` is the frame type byte that carries it."""

    TYPE: ClassVar[int] = 0

    def _encode(self, parts: list[bytes | memoryview]) -> None:
        return None

    @classmethod
    def _decode(cls, r: _Reader) -> Message:
        return cls()


# Handshake messages: the only ones accepted before the peer is authenticated.


@dataclass(frozen=True, slots=True)
class Hello(Message):
    """Each side's fresh 32-byte nonce and its option flags (bit 0: agrees to an unsealed channel)."""

    TYPE: ClassVar[int] = 0x01
    FLAG_ALLOW_PLAIN: ClassVar[int] = 0x01

    nonce: bytes
    flags: int = 0

    def _encode(self, parts: list[bytes | memoryview]) -> None:
        parts.append(self.nonce)
        parts.append(_U8.pack(self.flags))

    @classmethod
    def _decode(cls, r: _Reader) -> Hello:
        return cls(r.raw(32, "nonce"), r.u8("flags"))


@dataclass(frozen=True, slots=True)
class Auth(Message):
    """The client's proof that it knows the secret (HMAC-SHA256, 32 bytes)."""

    TYPE: ClassVar[int] = 0x02
    proof: bytes

    def _encode(self, parts: list[bytes | memoryview]) -> None:
        parts.append(self.proof)

    @classmethod
    def _decode(cls, r: _Reader) -> Auth:
        return cls(r.raw(32, "proof"))


@dataclass(frozen=True, slots=True)
class AuthOk(Message):
    """The server accepted the client's proof; carries the server's own proof."""

    TYPE: ClassVar[int] = 0x03
    proof: bytes

    def _encode(self, parts: list[bytes | memoryview]) -> None:
        parts.append(self.proof)

    @classmethod
    def _decode(cls, r: _Reader) -> AuthOk:
        return cls(r.raw(32, "proof"))


@dataclass(frozen=True, slots=True)
class AuthFailed(Message):
    """The server refused the client's proof. The server closes right after sending it."""

    TYPE: ClassVar[int] = 0x04
    reason: str = "authentication failed: the secrets differ"

    def _encode(self, parts: list[bytes | memoryview]) -> None:
        _str(parts, self.reason)

    @classmethod
    def _decode(cls, r: _Reader) -> AuthFailed:
        return cls(r.text("reason"))


# Messages of an established connection. Either side may send any of them (a dial-in worker initiates the
# connection but receives jobs), so the state machine does not restrict them by role.


@dataclass(frozen=True, slots=True)
class NodeInfo(Message):
    """What a peer is: `kind` ("client", "server" or "worker"), its worker count, software version, name."""

    TYPE: ClassVar[int] = 0x10
    kind: str
    workers: int
    version: str
    name: str

    def _encode(self, parts: list[bytes | memoryview]) -> None:
        _str(parts, self.kind)
        parts.append(_U32.pack(self.workers))
        _str(parts, self.version)
        _str(parts, self.name)

    @classmethod
    def _decode(cls, r: _Reader) -> NodeInfo:
        return cls(r.text("kind"), r.u32("workers"), r.text("version"), r.text("name"))


@dataclass(frozen=True, slots=True)
class FunctionBody(Message):
    """A function, sent once per connection and then referred to by `digest` (SHA-256 of the body).

    Either `sources` holds source texts (the function itself last, its depfuncs before it) and `name` is
    the name the function has once they are executed, or `pickled` holds a pickled callable (a lambda typed
    in a REPL, a closure, a builtin) and `sources` holds only depfuncs. `imports` are the job's modules: a
    bare module name ("math", "os.path") or a whole import line ("from os import path", "import numpy as np").
    """

    TYPE: ClassVar[int] = 0x20
    digest: bytes
    name: str
    sources: tuple[str, ...] = ()
    imports: tuple[str, ...] = ()
    pickled: bytes = b""

    def _encode(self, parts: list[bytes | memoryview]) -> None:
        parts.append(self.digest)
        _str(parts, self.name)
        _strs(parts, self.sources)
        _strs(parts, self.imports)
        _blob(parts, self.pickled)

    @classmethod
    def _decode(cls, r: _Reader) -> FunctionBody:
        digest = r.raw(32, "digest")
        name = r.text("name")
        sources = r.texts("sources")
        imports = r.texts("imports")
        return cls(digest, name, sources, imports, bytes(r.blob("pickled")))


class Job(NamedTuple):
    """One job: run the function with `digest` on the pickled `args` (a tuple) with `pickle_protocol`."""

    job_id: int
    digest: bytes
    args: Blob
    pickle_protocol: int = 5


@dataclass(frozen=True, slots=True)
class JobBatch(Message):
    """Jobs to run, in order. Every digest must have been sent as a `FunctionBody` on this connection."""

    TYPE: ClassVar[int] = 0x21
    jobs: tuple[Job, ...]

    def _encode(self, parts: list[bytes | memoryview]) -> None:
        pack = _JOB_HEAD.pack
        append = parts.append
        append(_U32.pack(len(self.jobs)))
        for job_id, digest, args, proto in self.jobs:
            if len(digest) != 32:
                raise ValueError(f"job {job_id}: digest must be 32 bytes, got {len(digest)}")
            append(pack(job_id, digest, proto, len(args)))
            append(args)

    @classmethod
    def _decode(cls, r: _Reader) -> JobBatch:
        count = r.u32("count")
        mv, off, end = r.mv, r.off, r.end
        if count * _JOB_HEAD.size > end - off:
            raise DecodeError(f"job batch: {count} jobs cannot fit in {end - off} bytes")
        unpack = _JOB_HEAD.unpack_from
        size = _JOB_HEAD.size
        jobs: list[Job] = []
        append = jobs.append
        for _ in range(count):
            if off + size > end:
                raise DecodeError(f"job batch: job header runs past the frame at offset {off}")
            job_id, digest, proto, n = unpack(mv, off)
            off += size
            if off + n > end:
                raise DecodeError(f"job batch: job {job_id} args of {n} bytes run past the frame")
            view = mv[off : off + n]
            append(Job(job_id, digest, view if n >= _LARGE else bytes(view), proto))
            off += n
        r.off = off
        return cls(tuple(jobs))


class Result(NamedTuple):
    """The outcome of one job.

    `ok`: `value` is the pickled return value. Not `ok`: `error_type` ("module.QualName"), `error_message`
    and `traceback` (formatted, remote) always describe the exception, and `exception` is its pickle when it
    could be pickled (else empty). `output` is what the job wrote to stdout and stderr, in order.
    `wall_time` and `cpu_time` are the worker's measurements in seconds.
    """

    job_id: int
    ok: bool
    value: Blob = b""
    output: str = ""
    wall_time: float = 0.0
    cpu_time: float = 0.0
    error_type: str = ""
    error_message: str = ""
    traceback: str = ""
    exception: Blob = b""


@dataclass(frozen=True, slots=True)
class ResultBatch(Message):
    """Results of jobs, in the order they finished."""

    TYPE: ClassVar[int] = 0x30
    results: tuple[Result, ...]

    def _encode(self, parts: list[bytes | memoryview]) -> None:
        pack = _RESULT_HEAD.pack
        append = parts.append
        append(_U32.pack(len(self.results)))
        for res in self.results:
            out = res.output.encode("utf-8", "surrogatepass") if res.output else b""
            value = res.value
            append(pack(res.job_id, 1 if res.ok else 0, res.wall_time, res.cpu_time, len(value), len(out)))
            append(value)
            append(out)
            if not res.ok:
                _str(parts, res.error_type)
                _str(parts, res.error_message)
                _str(parts, res.traceback)
                _blob(parts, res.exception)

    @classmethod
    def _decode(cls, r: _Reader) -> ResultBatch:
        count = r.u32("count")
        mv, off, end = r.mv, r.off, r.end
        if count * _RESULT_HEAD.size > end - off:
            raise DecodeError(f"result batch: {count} results cannot fit in {end - off} bytes")
        unpack = _RESULT_HEAD.unpack_from
        size = _RESULT_HEAD.size
        results: list[Result] = []
        append = results.append
        for _ in range(count):
            if off + size > end:
                raise DecodeError(f"result batch: result header runs past the frame at offset {off}")
            job_id, status, wall, cpu, nvalue, nout = unpack(mv, off)
            off += size
            if status > 1:
                raise DecodeError(f"result batch: job {job_id} has unknown status {status}")
            if off + nvalue + nout > end:
                raise DecodeError(f"result batch: job {job_id} fields run past the frame")
            view = mv[off : off + nvalue]
            value: Blob = view if nvalue >= _LARGE else bytes(view)
            off += nvalue
            output = _utf8(mv[off : off + nout], "result batch", "output") if nout else ""
            off += nout
            if status == 1:
                append(Result(job_id, True, value, output, wall, cpu))
                continue
            r.off = off
            etype = r.text("error_type")
            emsg = r.text("error_message")
            tb = r.text("traceback")
            exc = r.blob("exception")
            off = r.off
            append(Result(job_id, False, value, output, wall, cpu, etype, emsg, tb, exc))
        r.off = off
        return cls(tuple(results))


@dataclass(frozen=True, slots=True)
class Cancel(Message):
    """Cancel these jobs if they have not started; a job already running finishes and reports normally."""

    TYPE: ClassVar[int] = 0x40
    job_ids: tuple[int, ...]

    def _encode(self, parts: list[bytes | memoryview]) -> None:
        parts.append(_U32.pack(len(self.job_ids)))
        parts.append(struct.pack(f">{len(self.job_ids)}Q", *self.job_ids))

    @classmethod
    def _decode(cls, r: _Reader) -> Cancel:
        count = r.u32("count")
        off = r._need(8 * count, "job_ids")
        return cls(tuple(struct.unpack_from(f">{count}Q", r.mv, off)))


@dataclass(frozen=True, slots=True)
class StatsRequest(Message):
    """Ask the peer for a `StatsReply`."""

    TYPE: ClassVar[int] = 0x50


@dataclass(frozen=True, slots=True)
class StatsReply(Message):
    """A node's counters: jobs finished, the sum of their wall times, workers, connected clients."""

    TYPE: ClassVar[int] = 0x51
    jobs_done: int
    job_time: float
    workers: int
    clients: int

    def _encode(self, parts: list[bytes | memoryview]) -> None:
        parts.append(_U64.pack(self.jobs_done))
        parts.append(_F64.pack(self.job_time))
        parts.append(_U32.pack(self.workers))
        parts.append(_U32.pack(self.clients))

    @classmethod
    def _decode(cls, r: _Reader) -> StatsReply:
        return cls(r.u64("jobs_done"), r.f64("job_time"), r.u32("workers"), r.u32("clients"))


@dataclass(frozen=True, slots=True)
class Heartbeat(Message):
    """Sent by a side with nothing else to send, so the peer can tell silence from a dead link."""

    TYPE: ClassVar[int] = 0x60


@dataclass(frozen=True, slots=True)
class Bye(Message):
    """An orderly close, with the reason (shown to the peer's user): nothing follows it."""

    TYPE: ClassVar[int] = 0x70
    reason: str = ""

    def _encode(self, parts: list[bytes | memoryview]) -> None:
        _str(parts, self.reason)

    @classmethod
    def _decode(cls, r: _Reader) -> Bye:
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
        Cancel,
        StatsRequest,
        StatsReply,
        Heartbeat,
        Bye,
    )
}
"""Frame type byte -> message class: the one table both directions use."""

_DECODERS: dict[int, Callable[[_Reader], Message]] = {t: cls._decode for t, cls in MESSAGE_TYPES.items()}


def encode_message(message: Message) -> list[bytes | memoryview]:
    """The frame body of `message`, as a list of parts to be written out without joining large payloads."""
    parts: list[bytes | memoryview] = []
    message._encode(parts)
    return parts


def decode_message(frame_type: int, body: memoryview) -> Message:
    """The message in a frame body; a `DecodeError` for an unknown type or a malformed body."""
    decoder = _DECODERS.get(frame_type)
    if decoder is None:
        raise DecodeError(f"unknown frame type 0x{frame_type:02x}")
    r = _Reader(body, MESSAGE_TYPES[frame_type].__name__)
    message = decoder(r)
    r.finish()
    return message
