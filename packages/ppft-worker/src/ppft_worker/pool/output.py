"""A pool's side of its workers' output: the text of a job whose worker died, and live output.

Each worker mirrors what its current job writes into an output region (`outregion`) that the pool maps:

* When a worker dies, `keep_output` reads its region before the pool settles its jobs: the text goes with
  the job that wrote it (`task.kept_output`), and, when that job fails with `WorkerLostError`, into its
  result (`lost_fields`): the output is replayed on the caller's streams as any failed job's, and the error
  message quotes its last line.
* When the pool's owner watches live output (`LiveWatch`), every `LIVE_INTERVAL` seconds while jobs run it
  reads each busy worker's region and hands on the whole lines written since its last look, with their
  stream and place in the job's output, as `(task, stream, offset, text)`: stream 1 is stdout, 2 stderr.

This module runs on the pool's loop thread only; it never blocks and never writes to a region.
"""

from __future__ import annotations

import logging
import pickle
from collections.abc import Callable

from ppft_protocol import Result

from ..errors import WorkerLostError
from ..process import Snapshot, close_region, decode_text, new_region, read_region
from ..runtime import Loop, Task, Timer
from .worker import PoolWorker

TYPE_CHECKING = False
if TYPE_CHECKING:
    import mmap

__all__ = [
    "LIVE_INTERVAL",
    "LiveWatch",
    "OutputPiece",
    "keep_output",
    "lost_fields",
    "lost_result",
    "open_region",
]

log = logging.getLogger("ppft.pool")

LIVE_INTERVAL = 0.025
"""Seconds between two looks at the busy workers' output, while live output is watched."""

PARTIAL_MAX = 4096
"""A line still unfinished after this many bytes is passed on live all the same."""

_QUOTE_MAX = 200

OutputPiece = tuple[Task, int, int, str]
"""Live output: (task, stream 1 stdout or 2 stderr, byte offset in the job's output, text)."""

_region_failure_logged = False


def open_region() -> tuple[int, mmap.mmap] | None:
    """A new output region for a worker about to start, or None (logged once) when none can be made: that
    worker's jobs' output then leaves it only in their results."""
    global _region_failure_logged
    try:
        return new_region()
    except (OSError, ValueError) as exc:
        if not _region_failure_logged:
            _region_failure_logged = True
            log.warning(
                "cannot make an output region for a worker (%s): the output of a job whose worker dies "
                "is lost, and live output shows nothing until the job ends",
                exc,
            )
        return None


def keep_output(w: PoolWorker, tasks: list[Task]) -> None:
    """`w` died with `tasks` in flight: give the text its region holds to the task that wrote it, and
    release the region."""
    region = w.region
    w.region = None
    if region is None:
        return
    try:
        snapshot = read_region(region)
    finally:
        close_region(region)
    if snapshot is None:
        return
    for task in tasks:
        if task.wire[0] == snapshot.job_id:
            try:
                task.kept_output = snapshot  # type: ignore[attr-defined]
            except AttributeError:  # a task class without the attribute: its output is dropped
                pass
            return


def lost_result(w: PoolWorker, how: str, task: Task) -> Result:
    """The result of `task`, which failed for good with its worker `w` ("`w` `how`"): a `WorkerLostError`
    that says so, quoting the last line the job wrote, with the job's output as the pool kept it."""
    said, output = lost_fields(task)
    message = (
        f"{w!r} {how} while running this job; the job was run alone {task.attempts} time(s) and each "
        f"time its worker died, so it is not retried again{said}"
    )
    return Result(
        task.wire.job_id,
        False,
        error_type="ppft_worker.errors.WorkerLostError",
        error_message=message,
        exception=pickle.dumps(WorkerLostError(message)),
        **output,  # type: ignore[arg-type]
    )


def lost_fields(task: Task) -> tuple[str, dict[str, object]]:
    """What a job that failed with its worker's death says of its output: a sentence for the error message
    ("" if it wrote nothing), and the `output` and `stderr_spans` fields of its result."""
    snapshot: Snapshot | None = getattr(task, "kept_output", None)
    if snapshot is None:
        return "", {}
    text, spans = snapshot.text()
    if not text:
        return "", {}
    lines = [line for line in text.splitlines() if line.strip()]
    last = lines[-1] if lines else text
    if len(last) > _QUOTE_MAX:
        last = last[: _QUOTE_MAX - 3] + "..."
    lost = f" (the first {snapshot.start} bytes were not kept)" if snapshot.start else ""
    sentence = f"; it had written {snapshot.end} bytes of output{lost}, the last line {last!r}"
    return sentence, {"output": text, "stderr_spans": spans}


class LiveWatch:
    """Looks at the busy workers' output regions every `LIVE_INTERVAL` seconds and hands on new lines."""

    def __init__(
        self, loop: Loop, workers: list[PoolWorker], on_output: Callable[[list[OutputPiece]], None]
    ) -> None:
        self.loop = loop
        self.workers = workers
        self.on_output = on_output
        self._timer: Timer | None = None
        self._closed = False

    def busy(self) -> None:
        """Jobs were sent: look again soon (a no-op while a look is due)."""
        if self._timer is None and not self._closed:
            self._timer = self.loop.call_later(LIVE_INTERVAL, self._look)

    def close(self) -> None:
        self._closed = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _look(self) -> None:
        self._timer = None
        pieces: list[OutputPiece] = []
        busy = False
        for w in self.workers:
            if not w.inflight:
                continue
            busy = True
            if w.region is not None:
                self._read(w, pieces)
        if pieces:
            self.on_output(pieces)
        if busy:
            self.busy()

    def _read(self, w: PoolWorker, pieces: list[OutputPiece]) -> None:
        assert w.region is not None
        snapshot = read_region(w.region, w.live)
        if snapshot is None:
            return
        task = w.inflight.get(snapshot.job_id)
        if task is None:
            return  # its result is on its way (and carries the whole output)
        data = b"".join(piece for _, piece in snapshot.pieces)
        cut = data.rfind(b"\n") + 1
        if not cut:
            if len(data) < PARTIAL_MAX:
                return
            cut = len(data)
        end = snapshot.start + cut
        w.live = (snapshot.generation, end)
        pos = snapshot.start
        for stream, piece in snapshot.pieces:
            if pos >= end:
                break
            shown = piece[: end - pos]
            skip = 0
            while skip < len(shown) and skip < 4 and 0x80 <= shown[skip] < 0xC0:
                skip += 1  # the region kept only the end of a character: start at the next one
            if skip < len(shown):
                pieces.append((task, stream + 1, pos + skip, decode_text(shown[skip:])))
            pos += len(piece)
