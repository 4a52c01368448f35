"""The pool's side of shared segments (`ppft_worker.mapped`): what its own workers get and give through them.

Arguments that `mapped.snapshot` put in a shared segment at submit go to a local worker as the segment's
token (`local_args`), and the segment is closed when their job is done (`done`). A worker's value in a
segment of its own is mapped here as soon as its result arrives (`map_results`: the result then carries a
buffered pickle of views of the mapping, loaded with no copy), and the worker is told to let go of the
segment by a cancel of that finished job's id marked `RELEASE`. A segment that is gone (its worker died after
it sent the result) costs that worker: it is killed, and its jobs, that one included, run again.

Made by a `WorkerPool` whose owner unpickles the values in its own process, only where the machine has
segments (`segments_available`; PPFT_SEGMENTS=0 switches them off). It never reads or writes a pipe itself.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable

from ppft_protocol import Pickled, Result, ResultBatch

from ..mapped import RELEASE, close_args, last_is_mapped, mapped_args, open_field
from ..runtime import Task
from ..segments import SegmentError, segments_available
from .worker import PoolWorker

__all__ = ["SharedSegments", "shared_segments"]

log = logging.getLogger("ppft.pool")


class SharedSegments:
    """One pool's book of shared segments; `cancel(w, job_ids)` sends a `Cancel` to worker `w`."""

    def __init__(self, cancel: Callable[[PoolWorker, tuple[int, ...]], None]) -> None:
        self._cancel = cancel
        self.args_mapped = False  # some job's arguments went as a segment: `done` has segments to close

    def local_args(self, args: Pickled) -> bytes | None:
        """The mapped field of arguments snapshotted in a segment still open; None: they go as they are."""
        field = mapped_args(args)
        if field is not None:
            self.args_mapped = True
        return field

    def done(self, done: list[tuple[Task, Result]]) -> None:
        """These jobs are done: the segments of their arguments are closed."""
        for task, _ in done:
            close_args(task.wire[2])

    def map_results(self, w: PoolWorker, batch: ResultBatch) -> ResultBatch:
        """`batch` with the value `w` put in a segment mapped here (a worker sends such a value last in its
        frame: `mapped.MappedField`); `w` is told to let go of it."""
        results = batch.results
        if not last_is_mapped(results):
            return batch
        result = results[-1]
        job_id = result[0]
        try:
            mapped = result._replace(value=open_field(result[2]))  # type: ignore[arg-type]
        except SegmentError as exc:
            log.warning("%r: job %d's value cannot be mapped (%s): the job runs again", w, job_id, exc)
            with contextlib.suppress(ProcessLookupError):
                w.proc.kill()
            return ResultBatch(results[:-1])
        self._cancel(w, (RELEASE | job_id,))  # mapped here: the worker may close it now, not before
        return ResultBatch((*results[:-1], mapped))


def shared_segments(
    wanted: bool, cancel: Callable[[PoolWorker, tuple[int, ...]], None]
) -> SharedSegments | None:
    """A `SharedSegments` if `wanted` and the machine has segments (and PPFT_SEGMENTS=0 is not set)."""
    return SharedSegments(cancel) if wanted and segments_available() else None
