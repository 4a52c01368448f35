"""Pickling with out-of-band buffers (pickle protocol 5): large buffers travel beside the pickle.

`dumps` pickles an object as usual, and only when the pickle meets a buffer of `OOB_MIN` bytes or more (a
numpy array, a `pickle.PickleBuffer`: anything whose reduction gives a `PickleBuffer`; `bytes` and `bytearray`
stay in the pickle) does it pickle again with those buffers out of band, giving a `ppft_protocol.Pickled`
whose buffers are a snapshot of the object's memory (one copy; none after it, on the way out or in), or views
of it for a worker's result (`snapshot=False`). The probe costs nothing measurable on a pickle without such
buffers (the callback is never called), so tiny arguments and results keep the fast path. `loads` reads what
`dumps` gave (or the same buffered pickle as it arrived, a view of its frame) without copying the buffers;
`flatten` turns a buffered pickle into the plain pickle of the same object without unpickling it (for a
version-1 peer).

Client, ppserver and worker process all use it; it imports nothing of the rooms above. It never does I/O.
"""

from __future__ import annotations

import pickle
import struct

from ppft_protocol import Pickled, ResultBatch, is_pickled, split_pickled

TYPE_CHECKING = False
if TYPE_CHECKING:
    from ppft_protocol import Blob, Result, ResultRecords

__all__ = [
    "OOB_MIN",
    "LargeBuffer",
    "dumps",
    "flatten",
    "has_large_bytearray",
    "loads",
    "plain_result",
    "plain_results",
    "probe",
]

OOB_MIN = 64 * 1024
"""Buffers of this many bytes and more travel out of band (the size from which the protocol's decoder hands
out views of the frame instead of copies); smaller ones stay in the pickle."""


class LargeBuffer(Exception):
    """`probe` met a buffer that should travel out of band: pickle again with `dumps`."""


def probe(buf: pickle.PickleBuffer) -> bool:
    """`buffer_callback` of the first pickling: small buffers stay in band; a large one stops the pickling."""
    try:
        size = buf.raw().nbytes
    except BufferError:  # not contiguous: it stays in the pickle
        return True
    if size < OOB_MIN:
        return True
    raise LargeBuffer


def dumps(obj: object, protocol: int, snapshot: bool = True, shared: bool = True) -> bytes | Pickled:
    """`pickle.dumps(obj, protocol)`, or, when the pickle holds buffers of `OOB_MIN` bytes or more (protocol
    5), a `Pickled` of the pickle stream and those buffers.

    A buffer that is read-only travels as a view of `obj`'s memory; a writable one is copied once, here,
    into the bytes that travel (a snapshot: the object as it is now, as a plain pickle would have it,
    whatever the caller or the job does to it before the frame leaves; then nothing copies it again on its
    way). Buffers that add up to `mapped.SEGMENT_MIN` and more are all copied into one shared segment
    instead (`mapped.snapshot`, read-only ones too), which a local pool's own workers map. `snapshot=False`:
    writable buffers travel as views too, for a caller that sends the frame before anything can change
    `obj` (a worker's result). `shared=False`: never in a segment (no local worker will map it: the copy then
    lands in private memory, whose pages malloc reuses, where a new segment's are fresh). Raises what
    `pickle.dumps` raises."""
    if protocol < 5:
        return pickle.dumps(obj, protocol)
    try:
        return pickle.dumps(obj, protocol, buffer_callback=probe)
    except LargeBuffer:
        pass
    buffers: list[memoryview] = []

    def keep(buf: pickle.PickleBuffer) -> bool:
        try:
            view = buf.raw()
        except BufferError:
            return True
        if view.nbytes < OOB_MIN:
            return True
        buffers.append(view)
        return False

    data = pickle.dumps(obj, protocol, buffer_callback=keep)
    if not buffers:
        return data
    if snapshot:  # in a shared segment when they are large (`mapped`: local workers map it), else copies
        if shared:
            from . import mapped  # noqa: PLC0415 - only big data pays for it

            views = mapped.snapshot(buffers)
            if views is not None:
                return Pickled(data, views)
        buffers = [view if view.readonly else memoryview(view.tobytes()) for view in buffers]
    return Pickled(data, buffers)


def loads(field: Blob | Pickled) -> object:
    """The object of a buffered pickle (a `Pickled`, or its bytes as received). The buffers are handed to
    the loader as views of the field, never copied, except one that arrived read-only (a frame held in
    `bytes`), which is copied so that what was writable when pickled is writable again. A mapped pickle
    (`mapped`: its buffers in a shared segment of the local pool or worker) loads from views of the segment,
    mapped copy-on-write, read-only where the buffer was read-only when pickled."""
    if field.__class__ is not Pickled and field[:4] == _MAPPED:  # type: ignore[index]
        from . import mapped  # noqa: PLC0415 - only big data pays for it

        opened = mapped.open_field(field)  # type: ignore[arg-type]
        return pickle.loads(opened.data, buffers=opened.buffers)
    data, buffers = split_pickled(field)
    views = [view if not view.readonly else memoryview(bytearray(view)) for view in buffers]
    return pickle.loads(data, buffers=views)


_MAPPED = b"\xffPBM"  # mapped.MAGIC (not imported: only big data loads `mapped`)
_BYTEARRAY8 = b"\x96"
_LOOKS = 64  # candidates `has_large_bytearray` looks at before it gives up


def has_large_bytearray(data: bytes) -> bool:
    """Whether a plain protocol-5 pickle holds a writable buffer of `OOB_MIN` bytes or more in band (the
    BYTEARRAY8 opcode with such a length: what a numpy array or a writable `PickleBuffer` gives), so that
    pickling it again with `dumps` would set buffers apart. A guess that costs microseconds: it looks at the
    first `_LOOKS` bytes 0x96 only, and a false answer only keeps the plain pickle."""
    find = data.find
    end = len(data)
    pos = find(_BYTEARRAY8)
    for _ in range(_LOOKS):
        if pos < 0:
            return False
        size = int.from_bytes(data[pos + 1 : pos + 9], "little")
        if OOB_MIN <= size <= end - pos - 9:
            return True
        pos = find(_BYTEARRAY8, pos + 1)
    return False


_U64LE = struct.Struct("<Q")


def flatten(field: Blob | Pickled) -> bytes:
    """The plain pickle of the object of a buffered pickle, made without unpickling it: each NEXT_BUFFER is
    replaced by the buffer's bytes in band (BYTEARRAY8, which READONLY_BUFFER after it turns read-only as
    before), and the FRAME opcodes, whose sizes no longer hold, are dropped (framing is optional). For a peer
    of protocol version 1, which cannot read out-of-band buffers."""
    import pickletools  # noqa: PLC0415 - only the version-1 peers of big data pay for it

    data, buffers = split_pickled(field)
    stream = bytes(data)
    ops = list(pickletools.genops(stream))
    out = bytearray()
    next_buffer = iter(buffers)
    for index, (opcode, _, pos) in enumerate(ops):
        end = ops[index + 1][2] if index + 1 < len(ops) else len(stream)
        name = opcode.name
        if name == "FRAME":
            continue
        if name == "NEXT_BUFFER":
            buf = next(next_buffer)
            out += _BYTEARRAY8
            out += _U64LE.pack(buf.nbytes)
            out += buf
            continue
        out += stream[pos:end]
    return bytes(out)


def plain_result(result: Result) -> Result:
    """`result`, its value as a plain pickle if it was a buffered one (for a peer of protocol version 1)."""
    value = result.value
    if len(value) >= OOB_MIN and is_pickled(value):
        return result._replace(value=flatten(value))
    return result


def plain_results(records: ResultRecords) -> ResultBatch:
    """Results on their way on (ppserver, to a client of protocol version 1): the same results, their
    buffered values as plain pickles (`flatten`)."""
    return ResultBatch(tuple(plain_result(result) for result in records.results()))
