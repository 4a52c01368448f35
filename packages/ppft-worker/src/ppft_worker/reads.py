"""How much a read of a pipe or socket asks for, everywhere in ppft.

CPython allocates the whole requested size for every `os.read` / `socket.recv` before shrinking it to what
arrived, and glibc serves a request over its mmap threshold (128 KiB) with mmap and munmap: a 1 MiB read of a
47-byte result cost 12-15 us on the 2-core test machine, against 0.5 us for 64 KiB, once per frame on every
hop. 64 KiB holds a frame of 256 tiny results; the body of a larger frame is read in place into the buffer
the protocol assembles it in (`Connection.receive_buffer`), whatever this size.
"""

from __future__ import annotations

__all__ = ["READ_SIZE"]

READ_SIZE = 1 << 16
