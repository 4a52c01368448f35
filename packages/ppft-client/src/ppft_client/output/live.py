"""Live output (`Server(live_output=True)`): what running jobs write, from the nodes to the caller's streams.

Nodes report what running jobs write as `(job, stream, offset, text)` pieces (the local pool reads its
workers' output regions; a ppserver sends `LiveOutput` frames), on the I/O thread. The view turns them into
lines prefixed with the job's id and the node (`[job 3 on 127.0.0.1:35000] text`), each on the stream the
job wrote it to, and hands them to a `LivePrinter`, whose own thread prints them. When a job's result
arrives, the part of its output not shown yet is printed the same way, and the job's output counts as shown:
asking for its value prints nothing more, but waits (a few seconds at most) until those lines are out, so
that what the caller prints next comes after them.

`LiveView` runs on the I/O thread, so it only formats and queues: never prints, never blocks. `LivePrinter`
prints on a thread of its own (`ppft-output`), so that a caller's stdout that is a slow pipe delays nothing
else, and one that is closed or broken stops nothing; `put` only queues (and drops, past a limit, what a
stuck stdout cannot take: it says how much).
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable, Iterable
from typing import Any

from ppft_protocol import Result

from .replay import segments, write_lines

__all__ = ["LivePrinter", "LiveView", "format_live"]

Piece = tuple[Any, int, int, str]  # (job, stream: 1 stdout or 2 stderr, byte offset, text)


class LiveView:
    """Formats live output pieces and a finished job's remaining text; prints them through `printer`."""

    def __init__(self, printer: LivePrinter | None = None) -> None:
        self.printer = printer if printer is not None else LivePrinter()

    def pieces_from(self, node: str) -> Callable[[list[Piece]], None]:
        """The callback a node calls with its pieces (on the I/O thread)."""

        def report(pieces: list[Piece]) -> None:
            self.pieces(pieces, node)

        return report

    def pieces(self, pieces: list[Piece], node: str) -> None:
        lines: list[tuple[int, str]] = []
        for job, stream, offset, text in pieces:
            if not text:
                continue
            index = 0 if stream == 1 else 1
            shown = job._live_shown
            if offset > shown:
                lines.append(
                    (
                        index,
                        f"[job {job.tid} on {node}] [... {offset - shown} bytes not shown: written faster "
                        "than live output could follow; the job's result has all of it]\n",
                    )
                )
            lines += format_live(job.tid, node, index, text)
            job._live_shown = offset + (
                len(text) if text.isascii() else len(text.encode("utf-8", "surrogatepass"))
            )
        self.printer.put(lines)

    def finish(self, pairs: Iterable[tuple[Any, Result]], node: str) -> list[tuple[Any, Result]]:
        """Before the jobs of a result frame complete: print the rest of their output, and mark it shown."""
        pairs = list(pairs)
        lines: list[tuple[int, str]] = []
        printing = []
        for job, result in pairs:
            output = result[3]
            if not output:
                continue
            job._replayed = True
            printing.append(job)
            for index, text in segments(output, result.stderr_spans, job._live_shown):
                lines += format_live(job.tid, node, index, text)
        mark = self.printer.put(lines)
        for job in printing:
            job._live_mark = mark
        return pairs

    def wait(self, mark: int) -> None:
        """Until the lines queued up to `mark` are printed (a few seconds at most)."""
        self.printer.wait(mark)

    def close(self, timeout: float = 5.0) -> None:
        """Print what is queued, waiting up to `timeout` seconds for a slow stdout."""
        self.printer.close(timeout)


def format_live(tid: int, node: str, stream: int, text: str) -> list[tuple[int, str]]:
    """`text` of job `tid` as live output lines, `(stream, "[job 3 on node] line\n")` (stream 0 or 1); a last
    line without its newline (the job ended in the middle of it) gets one."""
    prefix = f"[job {tid} on {node}] "
    out = []
    for line in text.splitlines(keepends=True):
        end = "" if line.endswith(("\n", "\r")) else "\n"
        out.append((stream, prefix + line + end))
    return out


class LivePrinter:
    """Prints live output lines on a thread of its own (`ppft-output`), in the order they came."""

    LIMIT = 8 << 20
    """Characters waiting to be printed beyond which new lines are dropped (and counted)."""

    def __init__(self) -> None:
        self._queue: deque[tuple[int, str]] = deque()
        self._lock = threading.Lock()
        self._ready = threading.Condition(self._lock)
        self._waiting = 0  # characters queued
        self._dropped = 0  # lines dropped since the last note
        self._queued = 0  # lines queued since the start (dropped ones included)
        self._printed = 0  # lines printed (or dropped) since the start
        self._stuck = False  # a `wait` timed out: later ones do not wait until the queue is empty again
        self._stopping = False
        self._thread: threading.Thread | None = None

    def put(self, lines: list[tuple[int, str]]) -> int:
        """Queue `(stream, line)`s (any thread, the I/O thread included: never blocks on output); returns
        the mark to `wait` for, to know them printed."""
        with self._lock:
            if not lines:
                return self._queued
            self._queued += len(lines)
            size = sum(len(line) for _, line in lines)
            if self._waiting + size > self.LIMIT:
                self._dropped += len(lines)
                self._printed += len(lines)
                return self._queued
            self._waiting += size
            self._queue.extend(lines)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="ppft-output", daemon=True)
                self._thread.start()
            self._ready.notify_all()
            return self._queued

    def wait(self, mark: int, timeout: float = 1.0) -> bool:
        """Wait until the lines queued up to `mark` are printed; True if they are. A stdout that takes
        nothing for `timeout` seconds ends the wait, and later waits return at once until it has caught up:
        a stuck stdout delays the caller once, never job after job."""
        with self._lock:
            if self._printed >= mark:
                return True
            if self._stuck:
                return False
            if self._ready.wait_for(lambda: self._printed >= mark, timeout):
                return True
            self._stuck = True
            return False

    def close(self, timeout: float = 5.0) -> None:
        """Print what is queued (waiting up to `timeout` seconds for a slow stdout), then stop."""
        with self._lock:
            self._stopping = True
            self._ready.notify_all()
            thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)

    def _run(self) -> None:
        while True:
            with self._lock:
                while not self._queue and not self._stopping:
                    self._ready.wait()
                batch = list(self._queue)
                self._queue.clear()
                self._waiting = 0
                dropped, self._dropped = self._dropped, 0
            if dropped:
                batch.append(
                    (1, f"[ppft] {dropped} line(s) of live output dropped: stdout did not keep up\n")
                )
            if batch:
                write_lines(batch)
                with self._lock:
                    self._printed += len(batch) - (1 if dropped else 0)
                    if self._printed >= self._queued:
                        self._stuck = False
                    self._ready.notify_all()
            elif self._stopping:
                return
