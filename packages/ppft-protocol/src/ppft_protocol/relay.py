"""Result batches passed on undecoded: for a node that runs a peer's jobs on workers of its own.

ppserver receives its workers' `ResultBatch` frames and sends the same results on to the clients that sent
the jobs, under the clients' job ids. Decoding each result into a `Result` and encoding it again would cost
more than the rest of its work on a tiny job, so a `Connection(..., raw_results=True)` hands each result
frame over as `RawResults` instead: checked exactly as the `ResultBatch` decoder checks it (the same
`DecodeError`s), but kept as the bytes that arrived, with each result's job id, run time and place in the
body. `RawResults.forward` gives the message that carries chosen results on under other job ids; it is
encoded as the `ResultBatch` of those results would be, so the peer decodes an ordinary `ResultBatch`.

Results that carry stderr spans (version 2) pass on as they are to a version-2 peer; to a version-1 peer
(`_encode_older`) the frame is decoded and encoded again without them, its outputs unchanged: the slow way,
taken only by frames that hold such a result (`streams`), for a peer of the older version. A frame with a
value that is a buffered pickle (`buffered`, version 2: `buffers`) is refused on a version-1 connection:
its owner passes it on as plain pickles, which takes pickle (`ppft_worker.oob.plain_results`).

This module never unpickles anything and does no I/O.
"""

from __future__ import annotations

from .batches import _RESULT_HEAD, OK, STDERR, ResultBatch, _put_results, check_status, read_spans
from .codec import LARGE, LATEST, U32, U64, Blob, Message, Reader, utf8
from .errors import DecodeError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Sequence
    from typing import ClassVar

    from .batches import Result

__all__ = ["RawResults", "ResultRecords", "decode_raw_results"]

_PATCH_MAX = 4 * LARGE  # a body up to this size is forwarded as a copy with new ids written into it
_set = object.__setattr__


class RawResults(Message):
    """A `ResultBatch` as it arrived: checked, not decoded. Result `i` has job id `job_ids[i]`, ran for
    `wall_times[i]` seconds, and its record starts at `starts[i]` in `body` (the frame body); `streams`:
    some result carries stderr spans (version 2); `failures`: how many results are not ok (counted on the way,
    for whoever counts outcomes per frame; a result's own status is at `body[starts[i] + 8]`).

    Encoded as is, it is the very `ResultBatch` it was; `forward` passes results on under other ids, and
    `results()` decodes them, for whoever needs them after all."""

    __slots__ = ("body", "buffered", "failures", "job_ids", "starts", "streams", "wall_times")
    __match_args__ = ("body", "job_ids", "wall_times", "starts", "streams", "failures", "buffered")
    TYPE: ClassVar[int] = ResultBatch.TYPE

    body: Blob
    job_ids: tuple[int, ...]
    wall_times: tuple[float, ...]
    starts: tuple[int, ...]
    streams: bool
    failures: int
    buffered: bool

    def __init__(
        self,
        body: Blob,
        job_ids: tuple[int, ...],
        wall_times: tuple[float, ...],
        starts: tuple[int, ...],
        streams: bool = False,
        failures: int = 0,
        buffered: bool = False,
    ) -> None:
        _set(self, "body", body)
        _set(self, "job_ids", job_ids)
        _set(self, "wall_times", wall_times)
        _set(self, "starts", starts)
        _set(self, "streams", streams)
        _set(self, "failures", failures)
        _set(self, "buffered", buffered)

    def results(self) -> tuple[Result, ...]:
        """The results, decoded (as `ResultBatch` would have given them)."""
        return _decode_body(self.body)

    def value_starts_with(self, index: int, prefix: bytes) -> bool:
        """Whether the value of result `index` begins with `prefix` (its first byte looked at, then the rest;
        nothing decoded)."""
        body = self.body
        start = self.starts[index]
        off = start + _RESULT_HEAD.size
        if off >= len(body) or body[off] != prefix[0]:
            return False
        nvalue = _RESULT_HEAD.unpack_from(body, start)[4]
        return nvalue >= len(prefix) and body[off : off + len(prefix)] == prefix

    def forward(self, job_ids: Sequence[int], picks: Sequence[int] | None = None) -> ResultRecords:
        """The results at indexes `picks` (all of them, in order, when None), in that order, under `job_ids`:
        a message the peer decodes as the `ResultBatch` of those results with those ids.

        Nothing is decoded or re-encoded: a small body is copied once with the new ids written into it;
        otherwise the records go out as views of the body, so a large value is not copied here."""
        body = self.body
        starts = self.starts
        if picks is None:
            if len(job_ids) != len(starts):
                raise ValueError(f"{len(job_ids)} job ids for {len(starts)} results: give one id per result")
            if len(body) <= _PATCH_MAX:
                buf = bytearray(body)
                pack_into = U64.pack_into
                for start, job_id in zip(starts, job_ids, strict=True):
                    pack_into(buf, start, job_id)
                return ResultRecords((bytes(buf),), self.streams, self.buffered)
            picks = range(len(starts))
        elif len(job_ids) != len(picks):
            raise ValueError(f"{len(job_ids)} job ids for {len(picks)} results: give one id per result")
        view = memoryview(body)
        ends = (*starts[1:], len(body))
        parts: list[Blob] = [U32.pack(len(picks))]
        append = parts.append
        pack = U64.pack
        for index, job_id in zip(picks, job_ids, strict=True):
            append(pack(job_id))
            append(view[starts[index] + 8 : ends[index]])
        return ResultRecords(tuple(parts), self.streams, self.buffered)

    def _encode(self, parts: list[bytes | memoryview]) -> None:
        parts.append(self.body)

    def _encode_older(self, parts: list[bytes | memoryview], version: int) -> None:
        _refuse_buffered(self.buffered, version)
        if not self.streams:
            parts.append(self.body)
            return
        results = self.results()
        _put_results(parts, [result[0] for result in results], results, False)

    @classmethod
    def _decode(cls, r: Reader) -> RawResults:
        count = r.u32("count")
        mv, off, end = r.mv, r.off, r.end
        if count * _RESULT_HEAD.size > end - off:
            raise DecodeError(f"result batch: {count} results cannot fit in {end - off} bytes")
        data = r.whole_bytes()
        body: Blob = data if data is not None else mv
        unpack = _RESULT_HEAD.unpack_from
        size = _RESULT_HEAD.size
        ids: list[int] = []
        walls: list[float] = []
        starts: list[int] = []
        add_id, add_wall, add_start = ids.append, walls.append, starts.append
        streams = buffered = False
        failures = 0
        for _ in range(count):
            if off + size > end:
                raise DecodeError(f"result batch: result header runs past the frame at offset {off}")
            job_id, status, wall, _, nvalue, nout = unpack(body, off)
            add_id(job_id)
            add_wall(wall)
            add_start(off)
            stop = off + size + nvalue
            if stop + nout > end:
                raise DecodeError(f"result batch: job {job_id} fields run past the frame")
            if nvalue >= LARGE and body[off + size] == 0xFF:  # the first byte of a buffered pickle's magic
                buffered = True
            if nout:
                utf8(mv[stop : stop + nout], "result batch", "output")
            off = stop + nout
            if status == OK:
                continue
            if status & STDERR:
                check_status(r, job_id, status)
                r.off = off
                read_spans(r, job_id, mv[stop : stop + nout])
                off = r.off
                streams = True
                if status & OK:
                    continue
            elif status != 0:
                raise DecodeError(f"result batch: job {job_id} has unknown status {status}")
            failures += 1
            r.off = off
            r.text("error_type")
            r.text("error_message")
            r.text("traceback")
            r.need(r.u32("exception"), "exception")
            off = r.off
        r.off = off
        return cls(body, tuple(ids), tuple(walls), tuple(starts), streams, failures, buffered)


class ResultRecords(Message):
    """Results on their way on (`RawResults.forward`): the body of a `ResultBatch`, already encoded, in parts.
    The peer decodes it as that `ResultBatch`; it is never decoded as itself. `streams`: some result carries
    stderr spans, which a version-1 peer gets without (the records are then decoded and encoded again)."""

    __slots__ = ("buffered", "parts", "streams")
    __match_args__ = ("parts", "streams", "buffered")
    TYPE: ClassVar[int] = ResultBatch.TYPE

    parts: tuple[Blob, ...]
    streams: bool
    buffered: bool

    def __init__(self, parts: tuple[Blob, ...], streams: bool = False, buffered: bool = False) -> None:
        _set(self, "parts", parts)
        _set(self, "streams", streams)
        _set(self, "buffered", buffered)

    def results(self) -> tuple[Result, ...]:
        """The results, decoded (as the peer will decode them)."""
        return _decode_body(b"".join(self.parts))

    def _encode(self, parts: list[bytes | memoryview]) -> None:
        parts.extend(self.parts)

    def _encode_older(self, parts: list[bytes | memoryview], version: int) -> None:
        _refuse_buffered(self.buffered, version)
        if not self.streams:
            parts.extend(self.parts)
            return
        results = _decode_body(b"".join(self.parts))
        _put_results(parts, [result[0] for result in results], results, False)


def _refuse_buffered(buffered: bool, version: int) -> None:
    if buffered:
        raise ValueError(
            f"results with out-of-band buffers need protocol version 2, and this connection speaks version "
            f"{version}: pass them on as plain pickles (ppft_worker.oob.plain_results)"
        )


def _decode_body(body: Blob) -> tuple[Result, ...]:
    return ResultBatch._decode(Reader(memoryview(body), "ResultBatch", LATEST)).results


def decode_raw_results(body: memoryview, version: int = LATEST) -> RawResults:
    """The `ResultBatch` in a frame body as `RawResults`; a `DecodeError` where `ResultBatch` would fail
    (on a connection of protocol `version`)."""
    r = Reader(body, "ResultBatch", version)
    message = RawResults._decode(r)
    r.finish()
    return message
