"""`Link`: a peer that runs jobs for us over a `Stream`, seen as a node with a window of jobs in flight.

Two uses, one code: a client's link to a ppserver, and a ppserver's link to dial-in workers
(`python -m ppft_worker --connect`). The peer says how many workers it has (`NodeInfo`); the link keeps
`workers x window` jobs in flight, sends each function body once per connection, and hands results back.
When the stream ends, every job still in flight goes back to the owner (`on_lost`) to run elsewhere: the
peer's death is not the jobs' fault, so no attempt is charged.

A bug while dispatching or handling results ends this link's stream (`Stream.fail`) rather than the loop:
a task taken from the queue is in `inflight` before anything can fail, so the owner gets it back with the
others when the stream's end is reported, and runs it elsewhere.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from ppft_protocol import Event, NodeInfo, Result, ResultBatch, StatsReply

from .batching import Batching
from .stream import Stream
from .tasks import Task, TaskQueue, adopt, collect_results, send_batch, take_batch

__all__ = ["Link"]

log = logging.getLogger("ppft.link")


class Link:
    """The dispatching side of a stream whose peer runs jobs."""

    def __init__(
        self,
        name: str,
        stream: Stream,
        info: NodeInfo,
        *,
        on_results: Callable[[list[tuple[Task, Result]]], None],
    ) -> None:
        self.name = name
        self.stream = stream
        self.info = info
        self.workers = info.workers
        self.jobs_done = 0
        self.job_time = 0.0
        self.remote_stats: StatsReply | None = None
        self.inflight: dict[int, Task] = {}
        self._bodies: set[bytes] = set()
        self._batching = Batching(prefetch_long=True)
        self._on_results = on_results

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
        try:
            while queue:
                batch_size, window = batching.limits(queue[0].body.digest)
                free = self.workers * window - len(inflight)
                if free <= 0 or (inflight and free < batch_size):
                    break
                batch = take_batch(queue, min(free, batch_size * self.workers, 1024), batching)
                if not batch:
                    continue
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

    def take_inflight(self) -> list[Task]:
        """The jobs the peer held, in the order they were sent (it is gone, or going)."""
        tasks = list(self.inflight.values())
        self.inflight.clear()
        return tasks

    def _results(self, batch: ResultBatch) -> None:
        done, total = collect_results(batch, self.inflight.pop, self._batching)
        if done:
            self.jobs_done += len(done)
            self.job_time += total
            try:
                self._on_results(done)
            except BaseException:
                adopt(self.inflight, [task for task, _ in done])  # run again elsewhere, not lost
                raise
