"""`StdioServer`: one ppft client, over a pair of pipes, served by a pool of local worker processes.

The serving half of `python -m ppft_worker --stdio` (`command` prepares the process and reads the secret):

    client --pipe--> Stream (server role) --FunctionBody--> BodyTable
                                          --JobBatch-----> queue (ids renumbered) --dispatch--> WorkerPool
    client <--pipe-- result frames under the client's ids <--raw results----------------------'

It is a ppserver with exactly one client and no listening socket: the client must prove the secret before
anything it sends is accepted (the protocol emits no job event before that), jobs are renumbered on the way
in and results passed on undecoded under the client's ids, `Cancel` answers queued jobs as cancelled, and
`WatchOutput` sends what running jobs write as they write it. Limits on jobs, as on a ppserver: a
`JobLimits` gives the jobs of the next `JobBatch` their time limits, which the pool enforces (the job fails
with `JobTimeoutError`, its worker replaced), a `Terminate` stops jobs wherever they are here, and the pool
stops a worker over its memory limit and replaces one after its quota of jobs (`--worker-memory-limit`,
`--max-jobs-per-worker`, which the client puts on the command line from the entry). A client
that sends jobs faster than the workers run them is held back: past `QUEUE_CAP` queued jobs its channel is
not read until half of them ran.

The end of the channel, whatever ended it (the client's Bye, EOF because the client or its ssh went away, a
client silent beyond the heartbeat timeout, a protocol error), stops the loop; `run` then stops the workers
and returns. It never runs a job for a peer that did not prove the secret, and never writes to fd 1.
"""

from __future__ import annotations

import itertools
import logging
import socket
import sys
from collections import deque
from typing import cast

from ppft_protocol import (
    PROTOCOL_VERSIONS,
    Cancel,
    Connection,
    Established,
    Event,
    FunctionBody,
    JobBatch,
    JobLimits,
    LiveOutput,
    Message,
    NodeInfo,
    Put,
    PutRefused,
    Release,
    Result,
    ResultBatch,
    Role,
    StatsReply,
    StatsRequest,
    Terminate,
    WatchOutput,
)
from ppft_protocol.batches import ForwardedResults
from ppft_protocol.relay import RawResults

from ..oob import plain_result
from ..pipes import PipeChannel
from ..pool import WorkerPool
from ..runtime import (
    TERMINATED_MESSAGE,
    BodyTable,
    Loop,
    RefBook,
    ServedTask,
    Stream,
    Task,
    apply_limits,
    note_limits,
    offer_aes_gcm,
    take_jobs,
    withdraw,
)
from ..version import __version__

__all__ = ["HANDSHAKE_TIMEOUT", "QUEUE_CAP_MIN", "StdioServer"]

log = logging.getLogger("ppft.stdio")

HANDSHAKE_TIMEOUT = 30.0
"""Seconds the client has to complete its handshake once this side is up."""
QUEUE_CAP_MIN = 4096
"""Jobs queued here (beyond those on workers) before the channel is no longer read, at least."""
_CANCELLED_MESSAGE = "cancelled before it started"


class StdioServer:
    """Serve the client at the other end of (`chan_in`, `chan_out`) with `workers` worker processes."""

    def __init__(
        self,
        chan_in: int,
        chan_out: int,
        secret: bytes,
        workers: int,
        *,
        versions: tuple[int, int] | None = None,
        silence_timeout: float = 10.0,
        memory_limit: int | None = None,
        max_jobs_per_worker: int | None = None,
    ) -> None:
        """`versions`: the protocol versions to speak (left out: all this package speaks; tests pin them).
        `memory_limit` (bytes), `max_jobs_per_worker`: the workers' limits (`WorkerPool`)."""
        self.workers = workers
        self.closed = False  # the owner of every task: True once the client is gone
        self.exit_code = 0
        self.loop = Loop()
        self.queue: deque[Task] = deque()
        self.queue_cap = max(QUEUE_CAP_MIN, 1024 * workers)
        self.pool = WorkerPool(
            self.loop, workers, on_results=self._results, on_requeue=self._requeue, fork_threads=1,
            on_raw_results=self._raw_results, segments=True, memory_limit=memory_limit,
            max_jobs_per_worker=max_jobs_per_worker,
        )  # fmt: skip
        self.loop.on_idle = self._dispatch
        self._bodies = BodyTable("the ppft client")
        self.pool.refs = RefBook(None, copies=workers)  # `put()` objects, for the workers
        self._ids = itertools.count(1)
        self._paused = False
        self._limits: dict[int, float] = {}  # time limits (`JobLimits`) of the jobs of the next JobBatch
        self._version = 0
        host = socket.gethostname()
        comment = f"ppft-worker {__version__} --stdio on {host}, python {sys.version.split()[0]}"
        conn = Connection(
            Role.SERVER, secret, versions=versions or PROTOCOL_VERSIONS, allow_plain=True,
            aes_gcm=offer_aes_gcm(), comment=comment[:200],
        )  # fmt: skip
        self._host = host
        self.stream = Stream(
            self.loop, PipeChannel(chan_in, chan_out), conn, peer="the ppft client", on_event=self._event,
            on_close=self._closed, handshake_timeout=HANDSHAKE_TIMEOUT, silence_timeout=silence_timeout,
        )  # fmt: skip

    # -- life ------------------------------------------------------------------------------------------

    def run(self) -> int:
        """Serve until the channel ends (or `stop`); stop the workers; returns the exit code."""
        try:
            if not self.stream.closed:
                self.pool.start()
                self.loop.run_forever()
        finally:
            self.closed = True
            self.pool.close()
            self.stream.close("ppft-worker --stdio is done")
            self.loop.close()
        return self.exit_code

    def stop(self, reason: str) -> None:
        """Leave: tell the client why (it runs our jobs elsewhere at once) and stop. Safe from signal
        handlers and other threads."""

        def leave() -> None:
            log.info("%s", reason)
            self.closed = True
            self.stream.close(reason)
            self.loop.stop()

        self.loop.call_soon_threadsafe(leave)

    # -- the owner of its tasks (`intake.Owner`) -------------------------------------------------------

    def send(self, message: Message) -> None:
        self.stream.send(message)

    # -- the client's messages -------------------------------------------------------------------------

    def _event(self, event: Event) -> None:
        stream = self.stream
        if isinstance(event, JobBatch):
            tasks, unknown = take_jobs(self._bodies, event, self._ids, self)
            if self._limits:
                apply_limits(self._limits, tasks)
            self.queue.extend(tasks)
            if unknown:
                stream.send(ResultBatch(tuple(unknown)))
            if len(self.queue) >= self.queue_cap and not self._paused:
                self._paused = True
                stream.pause_reading()
        elif isinstance(event, FunctionBody):
            self._bodies.add(event, self._version)  # a refused body fails its jobs, naming why
        elif isinstance(event, Established):
            self._version = event.version
            how = f"sealed with {event.cipher}" if event.sealed else "unsealed (ssh encrypts the channel)"
            log.info("client authenticated (protocol version %d, %s)", event.version, how)
            stream.send(NodeInfo("server", self.workers, __version__, self._host))
        elif isinstance(event, (Put, Release, PutRefused)):  # `put()` refs: held here, sent to the workers
            answer = self.pool.refs_from_upstream(event)
            if answer is not None:
                stream.send(answer)
        elif isinstance(event, StatsRequest):
            stream.send(StatsReply(self.pool.jobs_done, self.pool.job_time, self.workers, 1))
        elif isinstance(event, Cancel):
            self._cancel(event.job_ids)
        elif isinstance(event, JobLimits):
            note_limits(self._limits, event.limits)
        elif isinstance(event, Terminate):
            self._cancel(event.job_ids, running=True)
        elif isinstance(event, WatchOutput):
            self.pool.watch_output(self._live_output if event.on else None)
        elif isinstance(event, NodeInfo):
            pass  # what the client is: nothing to do with it
        else:
            log.warning("ignored a %s from the client: not a message a client sends", type(event).__name__)

    def _cancel(self, job_ids: tuple[int, ...], running: bool = False) -> None:
        """Jobs still queued here are dropped and answered as cancelled; a job on a worker runs and reports
        as usual (as a ppserver does), unless `running` (a `Terminate`): then it is stopped too (its worker
        killed and replaced, or told to skip it) and answered as cancelled."""
        if running:
            answer = withdraw(self.queue, job_ids, TERMINATED_MESSAGE, self.pool.abandon)
        else:
            answer = withdraw(self.queue, job_ids, _CANCELLED_MESSAGE)
        if answer is not None:
            self.stream.send(answer)

    def _closed(self, reason: str) -> None:
        self.closed = True
        if self.stream.bye_reason is not None:
            log.info("the client left (%s)", self.stream.bye_reason or "it gave no reason")
        elif self._version:
            log.info("the channel closed: %s; stopping", reason)
        else:
            log.error("the client was not admitted: %s", reason)
            self.exit_code = 2
        self.loop.stop()

    # -- jobs and results ------------------------------------------------------------------------------

    def _dispatch(self) -> None:
        queue = self.queue
        if queue:
            self.pool.dispatch(queue)
        if self._paused and len(queue) <= self.queue_cap // 2:
            self._paused = False
            self.stream.resume_reading()

    def _requeue(self, tasks: list[Task]) -> None:
        self.queue.extendleft(reversed(tasks))

    def _results(self, pairs: list[tuple[Task, Result]]) -> None:
        """Results the pool made itself (a job that failed with its worker) or decoded (a value it mapped from
        a worker's segment), under the client's ids."""
        if pairs and not self.closed:
            ids = tuple([cast("ServedTask", task).client_id for task, _ in pairs])
            results = [result for _, result in pairs]
            if self._version < 2:  # values mapped from a worker's segment (`pool.shared`) as plain pickles
                results = [plain_result(result) for result in results]
            self.stream.send(ForwardedResults(ids, tuple(results)))

    def _raw_results(self, batch: RawResults, tasks: list[Task | None]) -> None:
        """A worker's result frame, passed on undecoded under the client's ids (a None task: dropped)."""
        if self.closed:
            return
        served = cast("list[ServedTask | None]", tasks)
        if all(task is not None for task in served):
            ids = [cast("ServedTask", task).client_id for task in served]
            self.stream.send(batch.forward(ids))
            return
        picks = [index for index, task in enumerate(served) if task is not None]
        if picks:
            ids = [cast("ServedTask", served[index]).client_id for index in picks]
            self.stream.send(batch.forward(ids, picks))

    def _live_output(self, pieces: list[tuple[Task, int, int, str]]) -> None:
        """What running jobs wrote, to the client, under its job ids."""
        if not self.closed and not self.stream.closed:
            entries = [(cast("ServedTask", task).client_id, s, o, t) for task, s, o, t in pieces]
            self.stream.send(LiveOutput(tuple(entries)))
