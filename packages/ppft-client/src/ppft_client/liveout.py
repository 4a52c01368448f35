"""`LiveView`: a server's live output (`Server(live_output=True)`), from its nodes to the caller's streams.

Nodes report what running jobs write as `(job, stream, offset, text)` pieces (the local pool reads its
workers' output regions; a ppserver sends `LiveOutput` frames), on the I/O thread. The view turns them into
lines prefixed with the job's id and the node (`[job 3 on 127.0.0.1:35000] text`), each on the stream the
job wrote it to, and hands them to a `LivePrinter`, whose own thread prints them. When a job's result
arrives, the part of its output not shown yet is printed the same way, and the job's output counts as shown:
asking for its value prints nothing more, but waits (a few seconds at most) until those lines are out, so
that what the caller prints next comes after them.

Runs on the I/O thread, so it only formats and queues: never prints, never blocks.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from ppft_protocol import Result

from .output import LivePrinter, format_live, segments

__all__ = ["LiveView"]

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
