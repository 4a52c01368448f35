"""The pool's side of shared segments (`ppft_worker.mapped`): what its own workers get and give through them.

Arguments that `mapped.snapshot` put in a shared segment at submit go to a local worker as the segment's
token (`local_args`), and the segment is closed when their job is done (`done`). A relay's pool (ppserver, a
dial-in worker, an ssh node's server) gets its peer's buffered arguments as they arrived, a view of the
frame: those of `SEGMENT_MIN` bytes and more are snapshotted into a segment when they first go to a worker
(one copy, `pwritev`, instead of two through the pipe) and the task keeps them so until it is done (a job
stolen or requeued goes again by the same segment; one dropped closes it as its arguments go).

A worker's value in a segment of its own is mapped here as soon as its result arrives (`map_results`: the
result then carries a buffered pickle of views of the mapping, loaded with no copy), and the worker is told
to let go of the segment by a cancel of that finished job's id marked `RELEASE`. A segment that is gone (its
worker died after it sent the result) costs that worker: it is killed, and its jobs, that one included, run
again. A relay's pool, which passes result frames on undecoded, decodes the (small) frame that ends with
such a value (`holds_mapped`): the value goes on to the peer as a buffered pickle whose buffers are views of
the mapping, sealed or written from there; the mapping lives as long as those views (an unsealed link's
unsent parts too), whatever the worker does with its segment. A mapped field never leaves the machine.

Made by a `WorkerPool` whose workers may use segments, only where the machine has segments
(`segments_available`; PPFT_SEGMENTS=0 switches them off). It never reads or writes a pipe itself.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterable

from ppft_protocol import DecodeError, Pickled, ResultBatch, is_pickled, split_pickled
from ppft_protocol.relay import RawResults

from ..mapped import (
    MAGIC,
    RELEASE,
    SEGMENT_MIN,
    close_args,
    last_is_mapped,
    mapped_args,
    open_field,
    snapshot,
)
from ..runtime import Task
from ..segments import SegmentError, segments_available
from .worker import PoolWorker

__all__ = ["SharedSegments", "shared_segments"]

log = logging.getLogger("ppft.pool")


class SharedSegments:
    """One pool's book of shared segments; `cancel(w, job_ids)` sends a `Cancel` to worker `w`."""

    def __init__(self, cancel: Callable[[PoolWorker, tuple[int, ...]], None], relay: bool = False) -> None:
        self._cancel = cancel
        self.relay = relay  # values only pass through: mapped read-only, populated (`open_field`)
        self.args_mapped = False  # some job's arguments went as a segment: `done` has segments to close

    def local_args(self, task: Task) -> bytes | None:
        """The mapped field of `task`'s arguments if they are (or now go) in a segment still open; None: they
        go as they are. Arguments that arrived from a peer as a buffered pickle of `SEGMENT_MIN` bytes and
        more are snapshotted here, and the task keeps the snapshot (`Task.wire`) until it is done."""
        args = task.wire[2]
        if args.__class__ is not Pickled:
            if len(args) < SEGMENT_MIN or not is_pickled(args):
                return None
            try:
                data, buffers = split_pickled(args)
            except DecodeError:  # a peer's malformed field goes as it came: its worker fails that job
                return None
            shared = snapshot(buffers, writable=True)  # over a socket, every buffer loads writable
            if shared is None:
                return None
            args = Pickled(bytes(data), shared)  # the frame it came in may go now
            task.wire = task.wire._replace(args=args)
        field = mapped_args(args)
        if field is not None:
            self.args_mapped = True
        return field

    def done(self, tasks: Iterable[Task | None]) -> None:
        """These jobs are done: the segments of their arguments are closed."""
        for task in tasks:
            if task is not None:
                close_args(task.wire[2])

    @staticmethod
    def holds_mapped(batch: RawResults) -> bool:
        """Whether an undecoded result frame ends with a value in a worker's segment (a look at one byte of
        the frame, then four)."""
        return bool(batch.starts) and batch.value_starts_with(len(batch.starts) - 1, MAGIC)

    def map_results(self, w: PoolWorker, batch: ResultBatch) -> ResultBatch:
        """`batch` with the value `w` put in a segment mapped here (a worker sends such a value last in its
        frame: `mapped.MappedField`); `w` is told to let go of it."""
        results = batch.results
        if not last_is_mapped(results):
            return batch
        result = results[-1]
        job_id = result[0]
        try:
            mapped = result._replace(value=open_field(result[2], not self.relay))  # type: ignore[arg-type]
        except SegmentError as exc:
            log.warning("%r: job %d's value cannot be mapped (%s): the job runs again", w, job_id, exc)
            with contextlib.suppress(ProcessLookupError):
                w.proc.kill()
            return ResultBatch(results[:-1])
        self._cancel(w, (RELEASE | job_id,))  # mapped here: the worker may close it now, not before
        return ResultBatch((*results[:-1], mapped))


def shared_segments(
    wanted: bool, cancel: Callable[[PoolWorker, tuple[int, ...]], None], relay: bool = False
) -> SharedSegments | None:
    """A `SharedSegments` if `wanted` and the machine has segments (and PPFT_SEGMENTS=0 is not set);
    `relay`: for a pool whose owner passes values on without unpickling them."""
    return SharedSegments(cancel, relay) if wanted and segments_available() else None
