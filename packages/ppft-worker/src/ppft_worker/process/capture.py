"""What a job writes to `sys.stdout` and `sys.stderr`: kept for its result, mirrored where its pool sees it.

`OutputCapture` gives the job runner two text streams, `stdout` and `stderr`, which it installs as
`sys.stdout` and `sys.stderr` while a job runs. Both write into one record of the job's text, in the order
written, which remembers which bytes went to stderr: `take()` gives the text and its stderr parts as
(start, end) UTF-8 byte offsets, the `output` and `stderr_spans` of the job's `Result`. Each write is also
copied into the worker's output region (`outregion`), when it has one, so that the text survives the worker's
death and can be watched live by the pool.

Costs: a job that writes nothing pays nothing here (the runner reads one attribute to know); a write pays
its UTF-8 encoding, a lock (threads the job started may print too) and a copy into the region, and no
system call. The region of an exec'd worker is mapped on the first write, never at start-up.

It never writes to a file descriptor, and never raises for what a job writes but what a real text stream
would raise for (a `write` of something that is not a `str`). Closing these streams does nothing: they serve
every job of the worker.
"""

from __future__ import annotations

import functools
import io

from ppft_protocol.cpython import allocate_lock

from .outregion import COUNT, GEN, HEADER, JOB, RING, RING_WORDS, SWITCHES, TOTAL, map_region

TYPE_CHECKING = False
if TYPE_CHECKING:
    import mmap
    from typing import Any

__all__ = ["OutputCapture"]

_EMPTY: tuple[tuple[int, int], ...] = ()


class OutputCapture:
    """The text the current job wrote, by stream, and its mirror in the output region."""

    def __init__(self, region: mmap.mmap | None = None, region_fd: int = -1) -> None:
        """`region`: the output region, mapped already (a forked worker's, inherited); `region_fd`: the
        descriptor of one to map on the first write (an exec'd worker's); neither: no mirror."""
        self.size = 0  # bytes the current job wrote: the runner's one test of "did the job write?"
        self.job_id = 0  # set by the runner for every job: whose text the region holds
        self._pieces: list[str] = []
        self._switches: list[int] = []  # byte positions where the stream changed (from stdout at 0)
        self._stream = 0
        self._lock = allocate_lock()
        self._region_fd = region_fd
        self._region: mmap.mmap | None = None
        self._words: memoryview | None = None
        if region is not None:
            self._attach(region)
        self.stdout = _TextStream(self, 0, "<stdout>")
        self.stderr = _TextStream(self, 1, "<stderr>")

    def _attach(self, region: mmap.mmap) -> None:
        self._region = region
        self._words = memoryview(region)[:HEADER].cast("Q")

    def write(self, stream: int, text: str) -> int:
        """Record `text` written to `stream` (0 stdout, 1 stderr); returns its length, as `write` does."""
        if type(text) is not str:
            if not isinstance(text, str):
                raise TypeError(f"write() argument must be str, not {type(text).__name__}")
            text = str(text)
        if not text:
            return 0
        data = text.encode("utf-8", "surrogatepass")
        lock = self._lock
        lock.acquire()
        try:
            start = self.size
            end = self.size = start + len(data)
            self._pieces.append(text)
            if stream != self._stream:
                self._switch(stream, start)
            region = self._region
            if region is not None and start and end <= RING:  # the region's position is at `start`
                region.write(data)
                self._words[TOTAL] = end  # type: ignore[index]  # after the bytes, never ahead of them
            elif region is not None or self._region_fd >= 0:
                self._mirror(start, data)
        finally:
            lock.release()
        return len(text)

    def _mirror(self, start: int, data: bytes) -> None:
        """`write`'s copy into the region, the rare cases: a job's first write, a ring that wraps."""
        region = self._region
        if region is None:
            region = self._map()  # the process's first write, so a job's first
            if region is None:
                return
        words: memoryview = self._words  # type: ignore[assignment]
        if not start:
            words[JOB] = self.job_id
        end = start + len(data)
        if end <= RING:
            region.seek(HEADER + start)
            region.write(data)
        else:
            _copy_wrapped(region, start, data)
        words[TOTAL] = end

    def _switch(self, stream: int, start: int) -> None:
        self._stream = stream
        self._switches.append(start)
        words = self._words
        if words is not None:
            count = words[COUNT]
            words[RING_WORDS + count % SWITCHES] = start << 1 | stream
            words[COUNT] = count + 1

    def _map(self) -> mmap.mmap | None:
        fd, self._region_fd = self._region_fd, -1
        region = map_region(fd)
        if region is not None:
            self._attach(region)
        return region

    def take(self) -> tuple[str, tuple[tuple[int, int], ...]]:
        """The current job's text and its stderr parts; the record (and the region) start afresh."""
        with self._lock:
            pieces = self._pieces
            text = pieces[0] if len(pieces) == 1 else "".join(pieces)
            switches = self._switches
            spans: tuple[tuple[int, int], ...] = _EMPTY
            if switches:
                bounds = [*switches, self.size] if len(switches) % 2 else switches
                spans = tuple(zip(bounds[0::2], bounds[1::2], strict=True))
                self._switches = []
                self._stream = 0
            self._pieces = []
            self.size = 0
            words = self._words
            if words is not None:
                words[TOTAL] = 0
                words[COUNT] = 0
                words[GEN] += 1
        return text, spans


def _copy_wrapped(region: mmap.mmap, start: int, data: bytes) -> None:
    """`data`, the output's bytes from `start` on, into the ring, past its first lap (where it may wrap)."""
    n = len(data)
    view = memoryview(data)
    if n >= RING:  # only the last RING bytes fit
        view = view[n - RING :]
        start += n - RING
        n = RING
    off = start % RING
    first = min(n, RING - off)
    region[HEADER + off : HEADER + off + first] = view[:first]
    if first < n:
        region[HEADER : HEADER + n - first] = view[first:]


class _TextStream(io.TextIOBase):
    """`sys.stdout` or `sys.stderr` of a job: a text stream writing into its `OutputCapture`."""

    def __init__(self, capture: OutputCapture, stream: int, name: str) -> None:
        super().__init__()
        self._capture = capture
        self._index = stream
        self._name = name
        self._buffer: _BinaryStream | None = None
        # print() calls `file.write`: the capture's own, bound to this stream, saves a Python call per write
        self.write = functools.partial(capture.write, stream)  # type: ignore[method-assign]

    def write(self, text: str) -> int:  # the instance's `write` above stands in for this one
        return self._capture.write(self._index, text)

    @property
    def name(self) -> str:
        return self._name

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return "utf-8"

    @property
    def errors(self) -> str:  # type: ignore[override]
        return "surrogateescape"

    @property
    def line_buffering(self) -> bool:
        return False

    @property
    def buffer(self) -> _BinaryStream:
        """Bytes written here join the text (decoded as UTF-8; other bytes travel as surrogate escapes and
        are written back as those bytes by the caller)."""
        if self._buffer is None:
            self._buffer = _BinaryStream(self)
        return self._buffer

    def writable(self) -> bool:
        return True

    def isatty(self) -> bool:
        return False

    def flush(self) -> None:
        pass

    def close(self) -> None:
        """Does nothing: the stream serves every job of this worker."""

    def reconfigure(self, **options: Any) -> None:
        """Accepted and ignored (the text travels as UTF-8 whatever is asked)."""


class _BinaryStream(io.RawIOBase):
    """`sys.stdout.buffer` of a job."""

    def __init__(self, text: _TextStream) -> None:
        super().__init__()
        self._text = text

    def write(self, data: bytes | bytearray | memoryview) -> int:  # type: ignore[override]
        raw = bytes(data)
        self._text.write(raw.decode("utf-8", "surrogateescape"))
        return len(raw)

    def writable(self) -> bool:
        return True

    def close(self) -> None:
        """Does nothing: the stream serves every job of this worker."""
