"""How much a read of a pipe or socket asks for, everywhere in ppft.

CPython allocates the whole requested size for every `os.read` / `socket.recv` before shrinking it to what
arrived, and glibc serves a request over its mmap threshold (128 KiB) with mmap and munmap: a 1 MiB read of a
47-byte result cost 12-15 us on the 2-core test machine, against 0.5 us for 64 KiB, once per frame on every
hop. 64 KiB holds a frame of 256 tiny results; the body of a larger frame is read in place into the buffer
the protocol assembles it in (`Connection.receive_buffer`), and while large frames keep coming reads ask for
1 MiB (`next_read_size`), where the allocation is small beside the payload.
"""

from __future__ import annotations

__all__ = ["READ_SIZE", "READ_SIZE_BULK", "next_read_size"]

READ_SIZE = 1 << 16
READ_SIZE_BULK = 1 << 20
"""What a read asks for while large frames stream in: the next frame then arrives in one read, and the
protocol keeps views into it rather than copying it into a buffer of its own."""


def next_read_size(asked: int, got: int) -> int:
    """The size of the next read: bulk after a read that filled what it asked for (more is waiting), small
    again after one that got less than the small size (tiny frames are back)."""
    if got >= asked:
        return READ_SIZE_BULK
    if got < READ_SIZE:
        return READ_SIZE
    return asked
