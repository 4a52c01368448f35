"""`OutBuffer`: bytes waiting for a non-blocking pipe or socket.

Kept as a deque of memoryviews written with `writev`, so a 256 MiB frame trickling into a 64 KiB pipe is
never copied again and again: each write only advances a view.
"""

from __future__ import annotations

import itertools
import os
from collections import deque

__all__ = ["OutBuffer"]


class OutBuffer:
    """Bytes waiting for a non-blocking fd, kept as a deque of views (no O(n^2) copying of big frames)."""

    __slots__ = ("chunks", "size")

    def __init__(self) -> None:
        self.chunks: deque[memoryview] = deque()
        self.size = 0

    def add(self, data: bytes | memoryview) -> None:
        if data:
            self.chunks.append(memoryview(data))
            self.size += len(data)

    def extend(self, parts: list[bytes | memoryview], skip: int = 0) -> None:
        """Add `parts` (as `Connection.data_to_send_parts` gives them), less their first `skip` bytes."""
        for part in parts:
            n = len(part)
            if skip >= n:
                skip -= n
                continue
            self.chunks.append(memoryview(part)[skip:] if skip else memoryview(part))
            self.size += n - skip
            skip = 0

    def write_to(self, fd: int) -> None:
        chunks = self.chunks
        while chunks:
            n = os.writev(fd, list(itertools.islice(chunks, 64)))
            self.size -= n
            while n:
                head = chunks[0]
                if n >= len(head):
                    n -= len(head)
                    chunks.popleft()
                else:
                    chunks[0] = head[n:]
                    n = 0
