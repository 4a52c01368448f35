"""Jobs and results, and the batches that carry them: the messages of the hot path.

Jobs and results travel in batches (`JobBatch`, `ResultBatch`) because batching is the performance model:
one frame carries up to hundreds of tiny jobs, so per-job cost is a few struct calls, not a syscall.
The per-job entries (`Job`, `Result`) are named tuples rather than messages for the same reason: they are
built 100,000 times a second, and a named tuple is immutable and several times cheaper to make. They are
`collections.namedtuple`s at run time (the encoders unpack them as plain tuples) and typed as
`typing.NamedTuple`s for the type checker, which keeps `typing` out of a worker's start-up: keep the two
definitions of each in step.

Large opaque fields (64 KiB and more) are returned as `memoryview` slices of the received frame instead of
copies, so a 256 MiB result is never copied by the decoder; smaller ones are `bytes`. `ForwardedResults`
sends results on under other job ids (ppserver, to the client that sent the jobs) as the very `ResultBatch`
they would make with those ids.

Version 2 tells, in a result, which parts of its output the job wrote to stderr (`stderr_spans`): bit 1 of
the status byte says that a list of spans follows the output. Version 1 has no such bit: a result sent on a
version-1 connection carries the same output, stdout and stderr in the order written, without the spans
(`_encode_older`), which is exactly what version 1 carries. This module never unpickles anything.
"""

from __future__ import annotations

import struct
from collections import namedtuple

from .buffers import Pickled
from .codec import LARGE, U32, Blob, Message, Reader, put_blob, put_str, utf8
from .errors import DecodeError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Sequence
    from typing import ClassVar, NamedTuple

__all__ = ["ForwardedResults", "Job", "JobBatch", "Result", "ResultBatch"]

_JOB_HEAD = struct.Struct(">Q32sBI")  # job id, function digest, pickle protocol, args length
_RESULT_HEAD = struct.Struct(">QBddII")  # job id, status, wall, cpu, value length, output length
_SPAN = struct.Struct(">II")  # start, end: UTF-8 byte offsets into the output
OK = 0x01  # status bit 0: the job returned
STDERR = 0x02  # status bit 1 (version 2): the output's stderr spans follow it
_set = object.__setattr__
_new_tuple = tuple.__new__

if TYPE_CHECKING:

    class Job(NamedTuple):
        job_id: int
        digest: bytes
        args: Blob | Pickled
        pickle_protocol: int = 5

    class Result(NamedTuple):
        job_id: int
        ok: bool
        value: Blob | Pickled = b""
        output: str = ""
        wall_time: float = 0.0
        cpu_time: float = 0.0
        error_type: str = ""
        error_message: str = ""
        traceback: str = ""
        exception: Blob = b""
        stderr_spans: tuple[tuple[int, int], ...] = ()

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
            "stderr_spans",
        ),
        defaults=(b"", "", 0.0, 0.0, "", "", "", b"", ()),
        module=__name__,
    )

Job.__doc__ = """One job: run the function with `digest` on the pickled `args` (a tuple) with
`pickle_protocol`: `Job(job_id, digest, args, pickle_protocol=5)`."""

Result.__doc__ = """The outcome of one job.

`Result(job_id, ok, value=b"", output="", wall_time=0.0, cpu_time=0.0, error_type="", error_message="",
traceback="", exception=b"", stderr_spans=())`. `ok`: `value` is the pickled return value. Not `ok`:
`error_type` ("module.QualName"), `error_message` and `traceback` (formatted, remote) always describe the
exception, and `exception` is its pickle when it could be pickled (else empty). `output` is what the job
wrote to stdout and stderr, in the order written; `stderr_spans` the parts of it that went to stderr, as
ascending, disjoint (start, end) offsets into its UTF-8 encoding (empty: all of it is stdout, or the peer
speaks protocol version 1, which does not tell). `wall_time` and `cpu_time` are the worker's measurements in
seconds."""


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
        checked = None
        for job_id, digest, args, proto in self.jobs:
            if digest is not checked:  # a batch's jobs mostly share one digest object
                if len(digest) != 32:
                    raise ValueError(f"job {job_id}: digest must be 32 bytes, got {len(digest)}")
                checked = digest
            append(pack(job_id, digest, proto, len(args)))
            if args.__class__ is Pickled:  # version 2: buffers uncopied
                parts.extend(args.parts())
            else:
                append(args)  # type: ignore[arg-type]  # not a Pickled: see above

    def _encode_older(self, parts: list[bytes | memoryview], version: int) -> None:
        for job in self.jobs:
            if type(job[2]) is Pickled:
                raise ValueError(
                    f"job {job[0]}: arguments with out-of-band buffers need protocol version 2, and this "
                    f"connection speaks version {version}: send them as a plain pickle"
                )
        self._encode(parts)

    @classmethod
    def _decode(cls, r: Reader) -> JobBatch:
        count = r.u32("count")
        mv, off, end = r.mv, r.off, r.end
        if count * _JOB_HEAD.size > end - off:
            raise DecodeError(f"job batch: {count} jobs cannot fit in {end - off} bytes")
        data = r.whole_bytes()  # small args are cut from it: no view per job
        unpack = _JOB_HEAD.unpack_from
        size = _JOB_HEAD.size
        jobs: list[Job] = []
        append = jobs.append
        for _ in range(count):
            if off + size > end:
                raise DecodeError(f"job batch: job header runs past the frame at offset {off}")
            job_id, digest, proto, n = unpack(mv, off)
            off += size
            stop = off + n
            if stop > end:
                raise DecodeError(f"job batch: job {job_id} args of {n} bytes run past the frame")
            if n >= LARGE:
                args: Blob = mv[off:stop]
            else:
                args = data[off:stop] if data is not None else mv[off:stop].tobytes()
            append(_new_tuple(Job, (job_id, digest, args, proto)))  # a quarter cheaper than Job(...)
            off = stop
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
        results = self.results
        _put_results(parts, [result[0] for result in results], results, True)

    def _encode_older(self, parts: list[bytes | memoryview], version: int) -> None:
        results = self.results
        _put_results(parts, [result[0] for result in results], results, False)

    @classmethod
    def _decode(cls, r: Reader) -> ResultBatch:
        count = r.u32("count")
        mv, off, end = r.mv, r.off, r.end
        if count * _RESULT_HEAD.size > end - off:
            raise DecodeError(f"result batch: {count} results cannot fit in {end - off} bytes")
        data = r.whole_bytes()  # small values are cut from it: no view per result
        unpack = _RESULT_HEAD.unpack_from
        size = _RESULT_HEAD.size
        results: list[Result] = []
        append = results.append
        for _ in range(count):
            if off + size > end:
                raise DecodeError(f"result batch: result header runs past the frame at offset {off}")
            job_id, status, wall, cpu, nvalue, nout = unpack(mv, off)
            off += size
            stop = off + nvalue
            if stop + nout > end:
                raise DecodeError(f"result batch: job {job_id} fields run past the frame")
            if nvalue >= LARGE:
                value: Blob = mv[off:stop]
            else:
                value = data[off:stop] if data is not None else mv[off:stop].tobytes()
            if nout:
                output = utf8(mv[stop : stop + nout], "result batch", "output")
                off = stop + nout
            else:
                output = ""
                off = stop
            if status == OK:
                append(_new_tuple(Result, (job_id, True, value, output, wall, cpu, "", "", "", b"", ())))
                continue
            spans: tuple[tuple[int, int], ...] = ()
            if status & STDERR:
                check_status(r, job_id, status)
                r.off = off
                spans = read_spans(r, job_id, mv[stop : stop + nout])
                off = r.off
                if status & OK:
                    append(
                        _new_tuple(Result, (job_id, True, value, output, wall, cpu, "", "", "", b"", spans))
                    )
                    continue
            elif status != 0:
                raise DecodeError(f"result batch: job {job_id} has unknown status {status}")
            r.off = off
            etype = r.text("error_type")
            emsg = r.text("error_message")
            tb = r.text("traceback")
            exc = r.blob("exception")
            off = r.off
            append(_new_tuple(Result, (job_id, False, value, output, wall, cpu, etype, emsg, tb, exc, spans)))
        r.off = off
        return cls(tuple(results))


class ForwardedResults(Message):
    """Results passed on under other job ids: `job_ids[i]` for `results[i]`.

    A node that runs a peer's jobs under ids of its own (ppserver: jobs of several clients share its workers)
    hands the results back under the peer's ids. This message goes on the wire exactly as
    `ResultBatch((results[0] with job_ids[0], ...))` would, and the peer decodes it as that `ResultBatch`;
    it only spares the sender a new `Result` per job (it is never decoded, so it has no frame type of its
    own in `MESSAGE_TYPES`)."""

    __slots__ = ("job_ids", "results")
    __match_args__ = ("job_ids", "results")
    TYPE: ClassVar[int] = ResultBatch.TYPE

    job_ids: tuple[int, ...]
    results: tuple[Result, ...]

    def __init__(self, job_ids: tuple[int, ...], results: tuple[Result, ...]) -> None:
        if len(job_ids) != len(results):
            raise ValueError(f"{len(job_ids)} job ids for {len(results)} results: give one id per result")
        _set(self, "job_ids", job_ids)
        _set(self, "results", results)

    def _encode(self, parts: list[bytes | memoryview]) -> None:
        _put_results(parts, self.job_ids, self.results, True)

    def _encode_older(self, parts: list[bytes | memoryview], version: int) -> None:
        _put_results(parts, self.job_ids, self.results, False)


def _put_results(
    parts: list[bytes | memoryview], job_ids: Sequence[int], results: Sequence[Result], spans_too: bool
) -> None:
    """The body of a `ResultBatch` of `results`, result `i` under `job_ids[i]`: what `ResultBatch` and
    `ForwardedResults` both put on the wire; `spans_too`: with the stderr spans (version 2), else without
    (version 1: the same output, all of it as one text)."""
    pack = _RESULT_HEAD.pack
    append = parts.append
    append(U32.pack(len(results)))
    for job_id, (_, ok, value, output, wall, cpu, etype, emsg, tb, exc, spans) in zip(
        job_ids, results, strict=True
    ):
        if value.__class__ is Pickled:
            _put_pickled(parts, job_id, ok, value, output, wall, cpu, spans if spans_too else None)
            if not ok:
                _put_error(parts, etype, emsg, tb, exc)
            continue
        if output:
            out = output.encode("utf-8", "surrogatepass")
            if spans and spans_too:
                append(pack(job_id, (OK if ok else 0) | STDERR, wall, cpu, len(value), len(out)))
                append(value)  # type: ignore[arg-type]  # not a Pickled: see above
                append(out)
                put_spans(parts, spans, len(out))
            else:
                append(pack(job_id, OK if ok else 0, wall, cpu, len(value), len(out)))
                append(value)  # type: ignore[arg-type]  # not a Pickled: see above
                append(out)
        else:
            append(pack(job_id, OK if ok else 0, wall, cpu, len(value), 0))
            append(value)  # type: ignore[arg-type]  # not a Pickled: see above
        if not ok:
            _put_error(parts, etype, emsg, tb, exc)


def _put_pickled(
    parts: list[bytes | memoryview],
    job_id: int,
    ok: bool,
    value: Pickled,
    output: str,
    wall: float,
    cpu: float,
    spans: Sequence[tuple[int, int]] | None,
) -> None:
    """A result whose value is a buffered pickle (version 2 only: `spans` None means version 1)."""
    if spans is None:
        raise ValueError(
            f"job {job_id}: a value with out-of-band buffers needs protocol version 2, and this connection "
            f"speaks version 1: send it as a plain pickle"
        )
    out = output.encode("utf-8", "surrogatepass")
    status = (OK if ok else 0) | (STDERR if spans and out else 0)
    parts.append(_RESULT_HEAD.pack(job_id, status, wall, cpu, len(value), len(out)))
    parts.extend(value.parts())
    if out:
        parts.append(out)
        if spans:
            put_spans(parts, spans, len(out))


def put_spans(parts: list[bytes | memoryview], spans: Sequence[tuple[int, int]], size: int) -> None:
    """The stderr spans of an output of `size` bytes: a count, then (start, end) pairs."""
    append = parts.append
    append(U32.pack(len(spans)))
    pack = _SPAN.pack
    last = 0
    for start, end in spans:
        if not last <= start < end <= size:
            raise ValueError(
                f"stderr span ({start}, {end}) is not within an output of {size} bytes after the previous "
                f"span's end {last}: spans are ascending, disjoint, non-empty UTF-8 byte ranges"
            )
        append(pack(start, end))
        last = end


def check_status(r: Reader, job_id: int, status: int) -> None:
    """A status with the STDERR bit: a `DecodeError` unless version 2 and no other unknown bit."""
    if status & ~(OK | STDERR):
        raise DecodeError(f"result batch: job {job_id} has unknown status {status}")
    if r.version < 2:
        raise DecodeError(
            f"result batch: job {job_id} has status {status}, whose stderr bit exists only in protocol "
            f"version 2; this connection speaks version {r.version}"
        )


def read_spans(r: Reader, job_id: int, output: memoryview) -> tuple[tuple[int, int], ...]:
    """The stderr spans of job `job_id`'s `output` (its UTF-8 bytes), checked: ascending, disjoint,
    non-empty, within the output and on character boundaries."""
    size = len(output)
    count = r.u32("stderr_spans")
    if not count:
        raise DecodeError(f"result batch: job {job_id} has the stderr bit set but no stderr span")
    off = r.need(count * _SPAN.size, "stderr_spans")
    unpack = _SPAN.unpack_from
    mv = r.mv
    spans = []
    last = 0
    for i in range(count):
        start, end = unpack(mv, off + i * _SPAN.size)
        if not last <= start < end <= size:
            raise DecodeError(
                f"result batch: job {job_id} has stderr span ({start}, {end}), not ascending, disjoint, "
                f"non-empty and within its output of {size} bytes"
            )
        if 0x80 <= output[start] < 0xC0 or (end < size and 0x80 <= output[end] < 0xC0):
            raise DecodeError(
                f"result batch: job {job_id} has stderr span ({start}, {end}), which cuts a UTF-8 character"
            )
        spans.append((start, end))
        last = end
    return tuple(spans)


def _put_error(parts: list[bytes | memoryview], etype: str, emsg: str, tb: str, exc: Blob) -> None:
    put_str(parts, etype)
    put_str(parts, emsg)
    put_str(parts, tb)
    put_blob(parts, exc)
