"""The output region: shared memory where a worker mirrors what its current job writes, for its pool to read.

A job's text normally leaves its worker in the job's `Result`, when the job ends. A worker that dies first (a
segfault, `os._exit`, SIGKILL, the OOM killer) takes that text with it, and the text is what says why it died.
So each local worker writes its job's output, as the job writes it, into a region of memory that its pool maps
too: one `memfd` per worker (an unlinked temporary file where there is no `memfd_create`), mapped by the pool
before the worker starts. A forked worker inherits the mapping; an exec'd one gets the descriptor and maps it
on its first write. The pool reads the region when the worker has died (the text of the job it was running,
which it puts into the job's `WorkerLostError` result), and, when an owner watches live output, every
`ppft_worker.pool.LIVE_INTERVAL` seconds while jobs run (whole lines, as the job writes them). The worker pays
a `memcpy` per write, and nothing at all for a job that writes nothing; the pool pays nothing until it reads.

Layout (native byte order: both sides are one machine), `REGION_SIZE` bytes:

    word 0   generation: +1 each time a job's output is taken (a reader tells one job's text from the next)
    word 1   the id of the job whose text this is (written on the job's first write)
    word 2   bytes the job wrote so far, `total` (0: nothing, or its output was taken)
    word 3   stream switches so far, `count`
    words 4..4+SWITCHES   the last SWITCHES switches, a ring: (byte position << 1) | stream (0 out, 1 err)
    HEADER..REGION_SIZE   the job's text, UTF-8, a ring: byte `p` of the output at `HEADER + p % RING`

The writer stores the text before `total`, so a reader (or a death) never sees a count ahead of its bytes;
a reader of a live worker checks the generation and `total` again after copying, and drops what the writer
may have overwritten meanwhile. Only the last `RING` bytes of a job's output are in the region: a dead
worker's job keeps its last megabyte, which is where the clue to its death is.

This module never runs a job and never writes a region (the worker's `capture` does).
"""

from __future__ import annotations

import os

TYPE_CHECKING = False
if TYPE_CHECKING:
    import mmap

__all__ = [
    "HEADER",
    "REGION_SIZE",
    "RING",
    "SWITCHES",
    "Snapshot",
    "close_region",
    "decode_text",
    "map_region",
    "new_region",
    "read_region",
]

REGION_SIZE = 1 << 20
HEADER = 1024
RING = REGION_SIZE - HEADER
SWITCHES = HEADER // 8 - 4
GEN, JOB, TOTAL, COUNT, RING_WORDS = 0, 1, 2, 3, 4


def new_region() -> tuple[int, mmap.mmap]:
    """A fresh, zeroed region: its descriptor (close-on-exec; pass it to an exec'd worker) and the pool's
    mapping of it. Raises OSError when none can be made (no memory, no descriptors)."""
    import mmap  # noqa: PLC0415 - loaded by the pool, never on a worker's way to its first result

    if hasattr(os, "memfd_create"):
        fd = os.memfd_create("ppft-output", os.MFD_CLOEXEC)
    else:  # macOS and others: an unlinked temporary file is the same shared memory to both processes
        import tempfile  # noqa: PLC0415

        fd, path = tempfile.mkstemp(prefix="ppft-output-")
        os.unlink(path)
    try:
        os.ftruncate(fd, REGION_SIZE)
        region = mmap.mmap(fd, REGION_SIZE)
    except BaseException:
        os.close(fd)
        raise
    return fd, region


def map_region(fd: int) -> mmap.mmap | None:
    """The worker's mapping of the region its pool passed as `fd` (which is closed); None if it cannot be
    mapped (the job's text then only leaves in its result)."""
    try:
        import mmap  # noqa: PLC0415 - a worker loads it on the first write of a job, not at start-up

        return mmap.mmap(fd, REGION_SIZE)
    except (ImportError, OSError, ValueError):
        return None
    finally:
        try:
            os.close(fd)
        except OSError:
            pass


def close_region(region: mmap.mmap | None) -> None:
    """Unmap the pool's side of a region (its worker is gone); never raises."""
    if region is not None:
        try:
            region.close()
        except (BufferError, ValueError, OSError):
            pass  # a view of it is still alive somewhere: the mapping goes when that view does


class Snapshot:
    """What a region held at one moment: the text job `job_id` wrote from byte `start` to byte `end` of its
    output, cut into (stream, bytes) pieces in order (stream 0: stdout, 1: stderr). `start` is past 0 when
    the job wrote more than the region keeps (the bytes before it are not in the region)."""

    __slots__ = ("end", "generation", "job_id", "pieces", "start")

    def __init__(
        self, generation: int, job_id: int, start: int, end: int, pieces: list[tuple[int, bytes]]
    ) -> None:
        self.generation = generation
        self.job_id = job_id
        self.start = start
        self.end = end
        self.pieces = pieces

    def text(self) -> tuple[str, tuple[tuple[int, int], ...]]:
        """The text, and its stderr parts as (start, end) UTF-8 byte offsets into it (as in a `Result`)."""
        data = b"".join(piece for _, piece in self.pieces)
        cut = 0
        while cut < len(data) and cut < 4 and 0x80 <= data[cut] < 0xC0:
            cut += 1  # the region kept only the end of a character: drop its tail bytes
        spans: list[tuple[int, int]] = []
        pos = 0
        for stream, piece in self.pieces:
            end = pos + len(piece)
            lo, hi = max(pos, cut) - cut, end - cut
            if stream and hi > lo:
                if spans and spans[-1][1] == lo:
                    spans[-1] = (spans[-1][0], hi)
                else:
                    spans.append((lo, hi))
            pos = end
        return decode_text(data[cut:]), tuple(spans)


def decode_text(data: bytes) -> str:
    """UTF-8 (lone surrogates allowed, as the protocol carries them), whatever a dying writer left."""
    try:
        return data.decode("utf-8", "surrogatepass")
    except UnicodeDecodeError:
        return data.decode("utf-8", "replace")


def read_region(region: mmap.mmap, after: tuple[int, int] = (-1, 0)) -> Snapshot | None:
    """The text in `region`: all it keeps of its job's output, or, with `after=(generation, since)` of an
    earlier snapshot and the region still at that generation, from byte `since` on. None when it holds
    nothing (no job wrote, or its output was taken), or nothing new.

    Safe while the worker writes: what it may have overwritten during the copy is left out, and a copy
    that raced the end of the job (the output was taken meanwhile) gives None."""
    words = memoryview(region).cast("Q")
    try:
        generation = words[GEN]
        total = words[TOTAL]
        job = words[JOB]
        since = after[1] if after[0] == generation else 0
        if not total or total <= since:
            return None
        count = words[COUNT]
        start = max(since, total - RING)
        data = _ring_bytes(region, start, total)
        switches = [words[RING_WORDS + i % SWITCHES] for i in range(max(0, count - SWITCHES), count)]
        if words[GEN] != generation or words[JOB] != job:
            return None  # the job ended (or another began) while we copied
        now = words[TOTAL]
    finally:
        words.release()
    if now - RING > start:  # the writer lapped the ring during the copy: keep only what it did not touch
        drop = min(now - RING - start, len(data))
        data = data[drop:]
        start += drop
        if not data:
            return None
    return Snapshot(generation, job, start, total, _by_stream(start, data, switches))


def _ring_bytes(region: mmap.mmap, start: int, end: int) -> bytes:
    lo = HEADER + start % RING
    n = end - start
    first = min(n, HEADER + RING - lo)
    data = region[lo : lo + first]
    if first < n:
        data += region[HEADER : HEADER + n - first]
    return data


def _by_stream(start: int, data: bytes, switches: list[int]) -> list[tuple[int, bytes]]:
    """`data` (output bytes from position `start`) cut where the stream switches."""
    if not switches:
        return [(0, data)] if data else []
    # the stream at `start`: that of the last switch at or before it; before the oldest switch kept, the
    # other one (a switch is recorded only when the stream changes)
    stream = 1 - (switches[0] & 1)
    for entry in switches:
        if entry >> 1 <= start:
            stream = entry & 1
    pieces: list[tuple[int, bytes]] = []
    pos = start
    for entry in switches:
        at = entry >> 1
        if at <= pos:
            continue
        if at >= start + len(data):
            break
        pieces.append((stream, data[pos - start : at - start]))
        pos = at
        stream = entry & 1
    if pos < start + len(data):
        pieces.append((stream, data[pos - start :]))
    return pieces
