"""Jobs and results, and the batches that carry them: the messages of the hot path.

Jobs and results travel in batches (`JobBatch`, `ResultBatch`) because batching is the performance model:
one frame carries up to hundreds of tiny jobs, so per-job cost is a few struct calls, not a syscall.
The per-job entries (`Job`, `Result`) are named tuples rather than messages for the same reason: they are
built 100,000 times a second, and a named tuple is immutable and several times cheaper to make. They are
`collections.namedtuple`s at run time (the encoders unpack them as plain tuples) and typed as
`typing.NamedTuple`s for the type checker, which keeps `typing` out of a worker's start-up: keep the two
definitions of each in step.

Large opaque fields (64 KiB and more) are returned as `memoryview` slices of the received frame instead of
copies, so a 256 MiB result is never copied by the decoder; smaller ones are `bytes`. This module never
unpickles anything.
"""

from __future__ import annotations

import struct
from collections import namedtuple

from .codec import LARGE, U32, Blob, Message, Reader, put_blob, put_str, utf8
from .errors import DecodeError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import ClassVar, NamedTuple

__all__ = ["Job", "JobBatch", "Result", "ResultBatch"]

_JOB_HEAD = struct.Struct(">Q32sBI")  # job id, function digest, pickle protocol, args length
_RESULT_HEAD = struct.Struct(">QBddII")  # job id, status, wall, cpu, value length, output length
_set = object.__setattr__

if TYPE_CHECKING:

    class Job(NamedTuple):
        job_id: int
        digest: bytes
        args: Blob
        pickle_protocol: int = 5

    class Result(NamedTuple):
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

else:
    Job = namedtuple("Job", ("job_id", "digest", "args", "pickle_protocol"), defaults=(5,), module=__name__)
    Result = namedtuple(
        "Result",
        (
            "job_id",
            "ok",
            "value",
            "output",
            "wall_time",
            "cpu_time",
            "error_type",
            "error_message",
            "traceback",
            "exception",
        ),
        defaults=(b"", "", 0.0, 0.0, "", "", "", b""),
        module=__name__,
    )

Job.__doc__ = """One job: run the function with `digest` on the pickled `args` (a tuple) with
`pickle_protocol`: `Job(job_id, digest, args, pickle_protocol=5)`."""

Result.__doc__ = """The outcome of one job.

`Result(job_id, ok, value=b"", output="", wall_time=0.0, cpu_time=0.0, error_type="", error_message="",
traceback="", exception=b"")`. `ok`: `value` is the pickled return value. Not `ok`: `error_type`
("module.QualName"), `error_message` and `traceback` (formatted, remote) always describe the exception, and
`exception` is its pickle when it could be pickled (else empty). `output` is what the job wrote to stdout and
stderr, in order. `wall_time` and `cpu_time` are the worker's measurements in seconds."""


class JobBatch(Message):
    """Jobs to run, in order. Every digest must have been sent as a `FunctionBody` on this connection."""

    __slots__ = ("jobs",)
    __match_args__ = ("jobs",)
    TYPE: ClassVar[int] = 0x21

    jobs: tuple[Job, ...]

    def __init__(self, jobs: tuple[Job, ...]) -> None:
        _set(self, "jobs", jobs)

    def _encode(self, parts: list[bytes | memoryview]) -> None:
        pack = _JOB_HEAD.pack
        append = parts.append
        append(U32.pack(len(self.jobs)))
        for job_id, digest, args, proto in self.jobs:
            if len(digest) != 32:
                raise ValueError(f"job {job_id}: digest must be 32 bytes, got {len(digest)}")
            append(pack(job_id, digest, proto, len(args)))
            append(args)

    @classmethod
    def _decode(cls, r: Reader) -> JobBatch:
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
            append(Job(job_id, digest, view if n >= LARGE else bytes(view), proto))
            off += n
        r.off = off
        return cls(tuple(jobs))


class ResultBatch(Message):
    """Results of jobs, in the order they finished."""

    __slots__ = ("results",)
    __match_args__ = ("results",)
    TYPE: ClassVar[int] = 0x30

    results: tuple[Result, ...]

    def __init__(self, results: tuple[Result, ...]) -> None:
        _set(self, "results", results)

    def _encode(self, parts: list[bytes | memoryview]) -> None:
        pack = _RESULT_HEAD.pack
        append = parts.append
        append(U32.pack(len(self.results)))
        for res in self.results:
            out = res.output.encode("utf-8", "surrogatepass") if res.output else b""
            value = res.value
            append(pack(res.job_id, 1 if res.ok else 0, res.wall_time, res.cpu_time, len(value), len(out)))
            append(value)
            append(out)
            if not res.ok:
                put_str(parts, res.error_type)
                put_str(parts, res.error_message)
                put_str(parts, res.traceback)
                put_blob(parts, res.exception)

    @classmethod
    def _decode(cls, r: Reader) -> ResultBatch:
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
            value: Blob = view if nvalue >= LARGE else bytes(view)
            off += nvalue
            output = utf8(mv[off : off + nout], "result batch", "output") if nout else ""
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
