"""`Link`: a peer that runs jobs for us over a `Stream`, seen as a node with a window of jobs in flight.

Two uses, one code: a client's link to a ppserver, and a ppserver's link to dial-in workers
(`python -m ppft_worker --connect`). The peer says how many workers it has (`NodeInfo`); the link keeps
`workers x window` jobs in flight, sends each function body once per connection, and hands results back.
When the stream ends, every job still in flight goes back to the owner (`on_lost`) to run elsewhere: the
peer's death is not the jobs' fault, so no attempt is charged. Live output the peer sends (`LiveOutput`,
protocol version 2, after the owner asked with `WatchOutput`) goes to `on_output` with the jobs' tasks.

A job the peer answers as cancelled (`stealing.CANCELLED_TYPE`) completes as cancelled only if this side asked
(`cancel`); a cancellation nobody asked for (a peer that gave the job up: a work steal, a restart) sends it
back to the owner (`on_requeue`) to run elsewhere.

Limits on jobs (`timelimits`): a job with a time limit travels alone, and on a version-2 connection its
limit goes just before it (`JobLimits`), so the peer enforces it from when the job starts there; a
version-1 peer cannot be told, so the link enforces it itself, counted from when the job was sent: when it is
up the job fails with `JobTimeoutError` and the peer gets a `Cancel`, which stops it only if it has not
started (a running one goes on there until it ends, and its result is dropped). `terminate` stops a job
held by the peer: a `Terminate` on version 2 (the peer kills its worker), a `Cancel` on version 1.

A bug while dispatching or handling results ends this link's stream (`Stream.fail`) rather than the loop:
a task taken from the queue is in `inflight` before anything can fail, so the owner gets it back with the
others when the stream's end is reported, and runs it elsewhere.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from operator import itemgetter

from ppft_protocol import (
    BodyLedger,
    Cancel,
    Event,
    JobLimits,
    LiveOutput,
    NodeInfo,
    PutRefused,
    Result,
    ResultBatch,
    StatsReply,
    Terminate,
    printable,
)

from .batching import Batching
from .loop import Timer
from .refs import RefBook, RefSync
from .stream import Stream
from .tasks import CANCELLED_TYPE, Task, TaskQueue, adopt, collect_results, send_batch, take_batch
from .timelimits import job_limit, timeout_message, timeout_result

__all__ = ["WORKER_REFUSED", "Link"]

log = logging.getLogger("ppft.link")

WORKER_REFUSED = "dial-in worker refused"
"""How a ppserver's Bye reason starts when it does not admit a dial-in worker (it admits no workers, or the
worker broke the rules of its role): the dial-in worker then knows that retrying cannot cure it."""

_ok = itemgetter(1)  # Result.ok


class Link:
    """The dispatching side of a stream whose peer runs jobs."""

    def __init__(
        self,
        name: str,
        stream: Stream,
        info: NodeInfo,
        *,
        on_results: Callable[[list[tuple[Task, Result]]], None],
        on_requeue: Callable[[list[Task]], None] | None = None,
    ) -> None:
        """`on_requeue`: where jobs the peer cancelled unasked go (None: they complete as cancelled)."""
        self.name = name
        self.stream = stream
        self.info = info
        self.workers = info.workers
        self.jobs_done = 0
        self.job_time = 0.0
        self.remote_stats: StatsReply | None = None
        self.inflight: dict[int, Task] = {}
        self._bodies = BodyLedger()  # what the peer holds (ppft_protocol.bodies: bounded on version 2)
        self._batching = Batching(prefetch_long=True)
        self._on_results = on_results
        self._on_requeue = on_requeue
        self.cancelling: set[int] = set()  # job ids we sent a Cancel for, their results not back yet
        self.on_output: Callable[[list[tuple[Task, int, int, str]]], None] | None = None
        self._deadlines: dict[int, tuple[float, Task, float]] = {}  # version 1: the limits kept here
        self._deadline_timer: Timer | None = None
        # the tasks of a taken batch that may go to this peer (`pythons.Screen`, for a peer on another
        # Python); None, the usual case: all of them
        self.screen: Callable[[list[Task]], list[Task]] | None = None
        self.refs: RefBook | None = None  # the owner's `put()` refs: the peer is sent them (`sync_refs`)
        self.ref_sync = RefSync()
        self.refused_refs: dict[int, str] = {}  # ref id -> why the peer refused it (`PutRefused`)
        # the peer stops a running job on `Terminate` (version 2); False: it cannot (a client's direct link
        # to a worker process, which reads nothing while a job runs): it is sent a `Cancel` instead
        self.stops_running = True

    @property
    def ready(self) -> bool:
        return not self.stream.closed and self.workers > 0

    def dispatch(self, queue: TaskQueue) -> int:
        """Send jobs from the head of `queue` while the window has room; returns how many."""
        if not self.ready:
            return 0
        batching = self._batching
        conn = self.stream.conn
        bodies = self._bodies
        inflight = self.inflight
        sent = 0
        batch: list[Task] = []
        self.sync_refs()  # before the jobs that use them
        try:
            while queue:
                batch_size, window = batching.limits(queue[0].body.digest)
                free = self.workers * window - len(inflight)
                if free <= 0 or (inflight and free < batch_size):
                    break
                batch = take_batch(queue, min(free, batch_size * self.workers, 1024), batching)
                if self.screen is not None and batch:
                    taken = len(batch)
                    batch = self.screen(batch)  # the others were failed, or given back to the queue
                    if len(batch) < taken:
                        if batch:
                            send_batch(conn, bodies, inflight, batch)
                            sent += len(batch)
                        break  # what was given back must not be taken again in this round
                if not batch:
                    continue
                if len(batch) == 1 and batch[0].solo:  # only a job that runs alone may have a time limit
                    limit = job_limit(batch[0])
                    if limit is not None:
                        self._limited(batch[0], limit)
                send_batch(conn, bodies, inflight, batch)
                sent += len(batch)
            if sent:
                self.stream.flush()
        except Exception as exc:  # noqa: BLE001 - a bug here ends this link, never the loop
            adopt(inflight, batch)
            self.stream.fail(exc, f"dispatching jobs to {self.name}")
        return sent

    def handle(self, event: Event) -> None:
        """An event from the peer (the owner routes its stream's events here)."""
        if isinstance(event, ResultBatch):
            self._results(event)
        elif isinstance(event, NodeInfo):
            self.info = event
            self.workers = event.workers
        elif isinstance(event, StatsReply):
            self.remote_stats = event
        elif isinstance(event, LiveOutput):
            self._live_output(event)
        elif isinstance(event, PutRefused):  # the jobs that need it fail there, naming the reason
            refused = self.refused_refs
            if event.ref_id not in refused:
                log.warning("%s refused ref %#x: %s", self.name, event.ref_id, printable(event.reason, 500))
            refused[event.ref_id] = event.reason

    def sync_refs(self) -> None:
        """Send the peer the refs it lacks (and the releases) now, rather than with the next batch."""
        refs = self.refs
        if refs is not None and self.ready and self.ref_sync.generation != refs.generation:
            refs.sync(self.stream.conn, self.ref_sync)
            self.stream.flush()

    def cancel(self, job_ids: tuple[int, ...]) -> None:
        """Ask the peer to cancel these jobs in flight; each still comes back once, cancelled or not."""
        if job_ids and not self.stream.closed:
            self.cancelling.update(job_ids)
            self.stream.send(Cancel(job_ids))

    def terminate(self, task: Task) -> bool:
        """Stop `task` if the peer holds it: it leaves the books (its answer, if any, is dropped) and the
        peer is told (`Terminate` on version 2: it kills the worker running it; `Cancel` on version 1:
        only a job that has not started stops). False if the peer does not hold it."""
        job_id = task.wire[0]
        if self.inflight.get(job_id) is not task:
            return False
        del self.inflight[job_id]
        self._deadlines.pop(job_id, None)
        if not self.stream.closed:
            self.cancelling.add(job_id)
            stops = self.stops_running and self.stream.conn.version >= 2
            self.stream.send(Terminate((job_id,)) if stops else Cancel((job_id,)))
        return True

    def take_inflight(self) -> list[Task]:
        """The jobs the peer held, in the order they were sent (it is gone, or going)."""
        tasks = list(self.inflight.values())
        self.inflight.clear()
        self.cancelling.clear()
        self._deadlines.clear()
        if self._deadline_timer is not None:
            self._deadline_timer.cancel()
            self._deadline_timer = None
        return tasks

    def _limited(self, task: Task, limit: float) -> None:
        """`task` with a time limit is about to be sent: the peer is told the limit, or (version 1) the
        link keeps it."""
        conn = self.stream.conn
        if conn.version >= 2:
            conn.send(JobLimits(((task.wire[0], limit),)))
            return
        when = time.monotonic() + limit
        self._deadlines[task.wire[0]] = (when, task, limit)
        timer = self._deadline_timer
        if timer is None or when < timer.when:
            if timer is not None:
                timer.cancel()
            self._deadline_timer = self.stream.loop.call_later(limit, self._expire, self._expire_failed)

    def _expire(self) -> None:
        """Version 1: fail the jobs whose limit is up (and `Cancel` them there); watch the rest."""
        self._deadline_timer = None
        now = time.monotonic()
        due: float | None = None
        expired: list[tuple[Task, Result]] = []
        for job_id, (when, task, limit) in list(self._deadlines.items()):
            if self.inflight.get(job_id) is not task:
                del self._deadlines[job_id]  # finished before its time was up
            elif when <= now:
                del self._deadlines[job_id]
                del self.inflight[job_id]
                name = task.body.name or "a pickled callable"
                job = getattr(task, "client_id", job_id)
                note = (
                    " (counted from when it was sent: that peer speaks protocol version 1, which cannot be "
                    "told a time limit nor stop a running job, so the job was cancelled there and may run on "
                    "until it ends)"
                )
                message = timeout_message(f"job {job} ({name})", self.name, limit, note=note)
                expired.append((task, timeout_result(task, message)))
            elif due is None or when < due:
                due = when
        if due is not None:
            self._deadline_timer = self.stream.loop.call_later(due - now, self._expire, self._expire_failed)
        if expired:
            ids = tuple(task.wire[0] for task, _ in expired)
            log.warning("%s: %d job(s) ran past their time limit; cancelling them there", self.name, len(ids))
            self.cancel(ids)
            self._on_results(expired)

    def _expire_failed(self, exc: BaseException) -> None:
        """`_expire` raised (the loop logged it): look again shortly."""
        self._deadline_timer = self.stream.loop.call_later(0.1, self._expire, self._expire_failed)

    def _live_output(self, event: LiveOutput) -> None:
        """What running jobs wrote: to `on_output`, for the jobs still in flight here (others are dropped)."""
        if self.on_output is None:
            return
        inflight = self.inflight
        pieces = []
        for job_id, stream, offset, text in event.pieces:
            task = inflight.get(job_id)
            if task is not None:
                pieces.append((task, stream, offset, text))
        if pieces:
            self.on_output(pieces)

    def _results(self, batch: ResultBatch) -> None:
        if self.cancelling or not all(map(_ok, batch.results)):  # C-level scan: no cost per job to speak of
            batch = self._settle_cancelled(batch)
        done, total = collect_results(batch, self.inflight.pop, self._batching)
        if done:
            self.jobs_done += len(done)
            self.job_time += total
            try:
                self._on_results(done)
            except BaseException:
                adopt(self.inflight, [task for task, _ in done])  # run again elsewhere, not lost
                raise

    def _settle_cancelled(self, batch: ResultBatch) -> ResultBatch:
        """The results of `batch` that complete their jobs: cancellations we did not ask for are taken out,
        their jobs sent back to the owner to run elsewhere."""
        cancelling = self.cancelling
        kept: list[Result] = []
        back: list[Task] = []
        for result in batch.results:
            job_id = result.job_id
            if job_id in cancelling:
                cancelling.discard(job_id)
            elif not result.ok and result.error_type == CANCELLED_TYPE and self._on_requeue is not None:
                task = self.inflight.pop(job_id, None)
                if task is not None:
                    back.append(task)
                continue
            kept.append(result)
        if back:
            log.info("%s gave back %d job(s) unasked; they run elsewhere", self.name, len(back))
            assert self._on_requeue is not None
            self._on_requeue(back)
        return batch if len(kept) == len(batch.results) else ResultBatch(tuple(kept))
