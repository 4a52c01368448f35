"""Pickles with out-of-band buffers (pickle protocol 5, PEP 574) in a job's args or a result's value.

Version 2 lets the opaque `args` of a `Job` and `value` of a `Result` hold a *buffered pickle*: the pickle
stream made with a `buffer_callback`, and the large buffers it handed out, each as its own part of the frame,
so that a 16 MiB array is written straight from the object's memory (`Connection.data_to_send_parts`) and
received as a view of the frame it arrived in, never copied by the codec. Layout (docs/protocol.md,
"Version 2", "Buffered pickles"):

    magic      4 bytes   ff 50 42 35 ("\\xffPB5": 0xff is no pickle opcode, so a version-1 loader fails at
                         once instead of misreading it)
    count      u32       the number of out-of-band buffers, at least 1
    sizes      count x u64, each buffer's length in bytes
    pickle     u64 length + the pickle stream (it refers to the buffers with NEXT_BUFFER, in order)
    buffers    the buffers' bytes, one after the other

A sender gives `Pickled(data, buffers)` as the field; the encoder writes its parts without joining them. A
receiver gets the field as it gets any opaque field (bytes, or a view of the frame when large); `is_pickled`
tells a buffered pickle, `split_pickled` cuts it into the pickle stream and the buffer views. A buffered
pickle goes only to a peer that negotiated version 2: a version-1 peer gets the same object as a plain
pickle (the sender flattens it; `JobBatch` and `ResultBatch` refuse to put a `Pickled` on a version-1
connection).

This module never unpickles anything and does no I/O.
"""

from __future__ import annotations

import struct

from .errors import DecodeError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Sequence

    from .codec import Blob

__all__ = ["MAGIC", "Pickled", "is_pickled", "split_pickled"]

MAGIC = b"\xffPB5"
_HEAD = struct.Struct(">4sI")  # magic, buffer count
_U64 = struct.Struct(">Q")


class Pickled:
    """A pickle stream `data` and the out-of-band `buffers` it refers to, to travel as one opaque field.

    `len()` is the field's length on the wire; `parts()` its bytes as parts, the buffers uncopied (each a
    `memoryview` of the object that was pickled: keep that object unchanged until the frame is written)."""

    __slots__ = ("buffers", "data", "size")

    def __init__(self, data: Blob, buffers: Sequence[memoryview]) -> None:
        if not buffers:
            raise ValueError("a buffered pickle has at least one out-of-band buffer: send a plain pickle")
        self.data = data
        self.buffers = tuple(buffers)
        self.size = _HEAD.size + 8 * len(self.buffers) + 8 + len(data) + sum(b.nbytes for b in self.buffers)

    def __len__(self) -> int:
        return self.size

    def header(self) -> bytes:
        """The magic, the count, the sizes and the pickle's length: what comes before the pickle."""
        sizes = b"".join([_U64.pack(b.nbytes) for b in self.buffers])
        return _HEAD.pack(MAGIC, len(self.buffers)) + sizes + _U64.pack(len(self.data))

    def parts(self) -> list[Blob]:
        return [self.header(), self.data, *self.buffers]

    def __repr__(self) -> str:
        sizes = ", ".join(str(b.nbytes) for b in self.buffers)
        return f"Pickled({len(self.data)} bytes of pickle, buffers of {sizes} bytes)"


def is_pickled(field: object) -> bool:
    """Whether an opaque field (as decoded: bytes or memoryview; or a `Pickled`) is a buffered pickle."""
    if type(field) is Pickled:
        return True
    if not isinstance(field, (bytes, memoryview)) or len(field) < _HEAD.size:
        return False
    return bytes(field[:4]) == MAGIC


def split_pickled(field: Blob | Pickled, what: str = "buffered pickle") -> tuple[Blob, list[memoryview]]:
    """The pickle stream and the buffers of a buffered pickle, as views of `field` (no copy); a `DecodeError`
    naming `what` when the layout does not hold (sizes that overrun the field, or bytes left over)."""
    if type(field) is Pickled:
        return field.data, list(field.buffers)
    mv = memoryview(field)  # type: ignore[arg-type]
    end = len(mv)
    if end < _HEAD.size:
        raise DecodeError(f"{what}: {end} bytes cannot hold a buffered pickle's header")
    magic, count = _HEAD.unpack_from(mv, 0)
    if magic != MAGIC:
        raise DecodeError(f"{what}: does not start with the buffered pickle magic {MAGIC.hex()}")
    off = _HEAD.size
    if count == 0 or off + 8 * (count + 1) > end:
        raise DecodeError(f"{what}: {count} buffers cannot be described in {end} bytes")
    sizes = [_U64.unpack_from(mv, off + 8 * i)[0] for i in range(count)]
    off += 8 * count
    (size,) = _U64.unpack_from(mv, off)
    off += 8
    total = off + size + sum(sizes)
    if total != end:
        raise DecodeError(
            f"{what}: a pickle of {size} bytes and buffers of {sum(sizes)} bytes need {total} bytes, "
            f"the field has {end}"
        )
    data = mv[off : off + size]
    off += size
    buffers = []
    for n in sizes:
        buffers.append(mv[off : off + n])
        off += n
    return data, buffers
