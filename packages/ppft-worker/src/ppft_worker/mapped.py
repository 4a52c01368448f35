"""Buffered pickles whose buffers lie in a shared segment: what a local pool and its own workers pass instead.

Between a local pool and its own worker processes (never over a socket), the out-of-band buffers of a
buffered pickle (`ppft_worker.oob`) that add up to `SEGMENT_MIN` bytes or more travel in one shared segment
(`ppft_worker.segments`) rather than through the pipe: the field that does travel is a *mapped* pickle, a
few dozen bytes beside the pickle stream. Layout (an opaque args or value field, protocol version 2):

    magic      4 bytes   ff 50 42 4d ("\\xffPBM": 0xff is no pickle opcode, as for "\\xffPB5")
    pid        u32       the process that holds the segment open (its `Segment.token()`)
    fd         u32       its descriptor there
    size       u64       the segment's size in bytes
    ino        u64       its inode number (`Segment.ino`): a later segment under the same fd is refused
    count      u32       the number of buffers, at least 1
    buffers    count x (offset u64, size u64, read-only u8): where each buffer lies in the segment, and
                         whether it was read-only when pickled
    pickle     the rest: the pickle stream (NEXT_BUFFER refers to the buffers in order)

Arguments: `snapshot` copies a job's writable buffers, at submit, straight into a segment (the copy that
buffered pickles make anyway, into shared memory instead of private memory; on a relay, the buffers of a
peer's job as they arrived in its frame, when the job first goes to a worker), registered here by the
mapping's object; `mapped_args` gives the pool the mapped field of such a `Pickled` while the segment is
open, and `close_args` closes it when the job is done. Results: `result_field` writes a value's buffers into
a segment the worker holds until the pool, which has mapped it (`open_field`), says so: a `Cancel` of the
finished job's id with its top bit set (`RELEASE`; no job has such an id, so a worker that does not know it
ignores it, and a cancel that races a job, a steal's, never releases anything) makes it `release` it. A
reader maps a segment copy-on-write: a buffer that was writable loads writable (writes stay in the reader),
and nothing is copied unless written.

The kernel frees a segment when its last descriptor and mapping go, so a process that dies leaks none. At
most `MAX_OPEN` segments are open per process (creator side); beyond that, buffers go through the pipe. This
module never does I/O on a pipe or socket.
"""

from __future__ import annotations

import struct

from ppft_protocol import Pickled

from .segments import Segment, SegmentError, open_segment, open_segments, segments_available

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence

    from ppft_protocol import Blob

__all__ = [
    "MAGIC",
    "MAX_OPEN",
    "RELEASE",
    "SEGMENT_MIN",
    "MappedField",
    "close_args",
    "held",
    "is_mapped",
    "kept_field",
    "last_is_mapped",
    "mapped_args",
    "open_field",
    "release",
    "result_field",
    "snapshot",
    "unkeep",
]

MAGIC = b"\xffPBM"
SEGMENT_MIN = 1 << 20
"""A buffered pickle whose out-of-band buffers add up to this many bytes or more goes through a segment."""
RELEASE = 1 << 63
"""A `Cancel` of `RELEASE | job_id`: the pool has mapped that job's value; the worker closes its segment."""
MAX_OPEN = 64
"""Segments a process keeps open at most; beyond, buffers go through the pipe."""

_HEAD = struct.Struct("<4sIIQQI")  # magic, pid, fd, size, ino, count
_ENTRY = struct.Struct("<QQB")  # offset, size, read-only
_ALIGN = 64  # each buffer starts on a cache line (numpy wants 16)


def _layout(sizes: Iterable[int]) -> tuple[list[int], int]:
    offsets = []
    end = 0
    for size in sizes:
        offsets.append(end)
        end += -(-size // _ALIGN) * _ALIGN
    return offsets, max(end, 1)


def _fill(buffers: Sequence[memoryview]) -> tuple[Segment, list[int]] | None:
    """A sealed segment holding `buffers` (the one copy), and their offsets; None when they add up to less
    than `SEGMENT_MIN`, segments are off, the process holds `MAX_OPEN` already, or the machine refuses one."""
    if sum(b.nbytes for b in buffers) < SEGMENT_MIN:
        return None
    if open_segments()[0] >= MAX_OPEN or not segments_available():
        return None
    offsets, size = _layout(b.nbytes for b in buffers)
    try:
        segment = Segment.create(size)
    except SegmentError:
        return None
    try:
        for offset, buf in zip(offsets, buffers, strict=True):
            segment.write([buf], offset)
        segment.seal()
    except BaseException:
        segment.close()
        raise
    return segment, offsets


def _field(
    segment: Segment, offsets: Sequence[int], buffers: Sequence[tuple[int, bool]], data: Blob
) -> bytes:
    pid, fd, size = segment.token()
    entries = b"".join(_ENTRY.pack(o, n, ro) for o, (n, ro) in zip(offsets, buffers, strict=True))
    return b"".join((_HEAD.pack(MAGIC, pid, fd, size, segment.ino, len(offsets)), entries, data))


def is_mapped(field: object) -> bool:
    """Whether an opaque field (bytes or memoryview, as received) is a mapped pickle."""
    return isinstance(field, (bytes, memoryview)) and len(field) >= _HEAD.size and field[:4] == MAGIC


def open_field(field: Blob, writable: bool = True) -> Pickled:
    """The buffered pickle of a mapped field: its pickle stream, and its buffers as views of the segment
    mapped copy-on-write here (a buffer read-only when pickled comes read-only); `writable=False`: mapped
    read-only and shared, its pages populated at once, every buffer read-only (for a relay, which only sends
    them on). Raises `SegmentError` when the segment is gone (its holder died or closed it) or the field does
    not describe it."""
    mv = memoryview(field)
    magic, pid, fd, size, ino, count = _HEAD.unpack_from(mv)
    end = _HEAD.size + count * _ENTRY.size
    if magic != MAGIC or count < 1 or end > len(mv):
        raise SegmentError(f"a mapped pickle of {len(mv)} bytes does not hold its {count} buffers' places")
    mapped = open_segment(pid, fd, size, writable=writable, ino=ino)
    view = mapped.view
    mapped.close()
    buffers = []
    for index in range(count):
        offset, length, read_only = _ENTRY.unpack_from(mv, _HEAD.size + index * _ENTRY.size)
        if offset + length > size:
            raise SegmentError(f"a buffer of {length} bytes at {offset} overruns the segment of {size} bytes")
        part = view[offset : offset + length]
        buffers.append(part.toreadonly() if read_only and writable else part)
    return Pickled(mv[end:], buffers)


# -- arguments: snapshots at submit, sent by the pool ------------------------------------------------------

_args: dict[int, tuple[Segment, list[int], list[bool]]] = {}  # id(the mapping's object) -> what it holds


def snapshot(views: Sequence[memoryview], writable: bool = False) -> list[memoryview] | None:
    """Copies of `views` (a job's out-of-band buffers, at submit) in one new segment, as read-only views of
    it, registered for `mapped_args`; None when they are too small for a segment, or none can be had (then
    the caller copies them into private memory as before). A worker loads each buffer read-only if its
    view was, or writable for all with `writable=True` (buffers a relay received from a peer)."""
    made = _fill(views)
    if made is None:
        return None
    segment, offsets = made
    whole = segment.view
    segment.forget_view()  # the views below keep the mapping, and its end closes the segment
    owner = whole.obj
    key = id(owner)
    _args[key] = (segment, offsets, [not writable and v.readonly for v in views])
    import weakref  # noqa: PLC0415 - only big arguments pay for it

    weakref.finalize(owner, _forget, key, segment).atexit = False
    return [whole[o : o + v.nbytes] for o, v in zip(offsets, views, strict=True)]


def _forget(key: int, segment: Segment) -> None:
    """The snapshot's mapping is gone (the job and its arguments are): its segment goes too."""
    if _args.get(key, (None,))[0] is segment:
        del _args[key]
    segment.close()


def _registered(args: Pickled) -> tuple[Segment, list[int], list[bool]] | None:
    buffers = args.buffers
    entry = _args.get(id(buffers[0].obj))
    if entry is None or entry[0].fd < 0 or len(entry[1]) != len(buffers):
        return None
    return entry


def mapped_args(args: Pickled) -> bytes | None:
    """The mapped field of arguments `snapshot` put in a segment that is still open; None otherwise."""
    entry = _registered(args)
    if entry is None:
        return None
    segment, offsets, read_only = entry
    return _field(
        segment, offsets, [(b.nbytes, ro) for b, ro in zip(args.buffers, read_only, strict=True)], args.data
    )


def close_args(args: object) -> None:
    """The job of these arguments is done: close their segment (the memory goes with the last mapping)."""
    if args.__class__ is Pickled:
        entry = _registered(args)
        if entry is not None:
            entry[0].close()


# -- results: written by the worker, held until the pool has mapped them -----------------------------------

_held: dict[int, Segment] = {}  # job id -> the segment of its result, until the pool releases it


class MappedField(bytes):
    """A worker's mapped value: its class tells the worker loop to send it at once, so that it is the last
    result of its frame (the only one the pool looks at: `last_is_mapped`)."""

    __slots__ = ()


def last_is_mapped(results: Sequence[tuple[object, ...]]) -> bool:
    """Whether the last of a frame's results carries a mapped value (one byte compared: tiny frames pay
    nothing more)."""
    value = results[-1][2] if results else b""
    return value[:1] == b"\xff" and is_mapped(value)  # type: ignore[index]


def result_field(job_id: int, value: Pickled) -> bytes | None:
    """A worker's value with large buffers: the mapped field of a segment holding them (held until
    `release(job_id)`), or None (then the value travels as a buffered pickle through the pipe)."""
    field = _held_field(_held, job_id, value)  # none past MAX_OPEN open segments (`_fill`)
    return None if field is None else MappedField(field)


_kept: dict[int, Segment] = {}  # a put() ref's id -> the segment of its buffers, until `unkeep`


def kept_field(key: int, value: Pickled) -> bytes | None:
    """A `put()` ref's buffered pickle as the mapped field of a segment held under `key` until `unkeep(key)`
    (a ppserver's or dial-in worker's copy, which its workers map), or None (too small, or no segment)."""
    return _held_field(_kept, key, value)


def _held_field(store: dict[int, Segment], key: int, value: Pickled) -> bytes | None:
    """`value`'s buffers in a new segment kept in `store` under `key` (closing the one it replaces), as its
    mapped field; None if they are too small for a segment or none can be had."""
    buffers = value.buffers
    made = _fill(buffers)
    if made is None:
        return None
    segment, offsets = made
    _drop(store, key)
    store[key] = segment
    return _field(segment, offsets, [(b.nbytes, b.readonly) for b in buffers], value.data)


def unkeep(key: int) -> None:
    """Close the segment `kept_field` holds under `key`, if any (its memory goes with the last mapping)."""
    _drop(_kept, key)


def _drop(store: dict[int, Segment], key: int) -> None:
    segment = store.pop(key, None)
    if segment is not None:
        segment.close()


def held() -> tuple[int, int]:
    """How many result segments this worker holds for its pool, and their bytes."""
    return len(_held), sum(s.size for s in _held.values())


def release(job_ids: Iterable[int]) -> None:
    """A `Cancel` came: the ids of it marked `RELEASE` name values the pool has mapped; their segments are
    closed (other ids are a real cancel's, which releases nothing)."""
    for job_id in job_ids:
        if job_id & RELEASE:
            _drop(_held, job_id ^ RELEASE)
