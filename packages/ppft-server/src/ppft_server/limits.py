"""`ServerLimits`: what a ppserver does with its clients' limits on jobs and requests to stop them.

    Cancel(ids)     -> the client's jobs still queued are dropped, answered as cancelled; running ones run on
    JobLimits       -> kept until the client's next JobBatch, whose listed jobs get that time limit: they
                       run alone on a worker, which is killed and replaced when the limit is up (the job
                       fails with JobTimeoutError: `ppft_worker.pool.limits`)
    Terminate(ids)  -> queued: dropped; running on a local worker: the worker is killed and replaced; on a
                       dial-in worker: passed on (`Link.terminate`). Each is answered as cancelled

It only ever touches the jobs of the session that asked, and never blocks. A client that sends more time
limits than it sends jobs for (`MAX_PENDING_LIMITS`) breaks the rules of its role (`PeerError`).
"""

from __future__ import annotations

from typing import Any, cast

from ppft_protocol import ResultBatch
from ppft_worker.runtime import ServedTask, Task, apply_limits

from .peers import (
    CANCELLED_MESSAGE,
    MAX_PENDING_LIMITS,
    TERMINATED_MESSAGE,
    PeerError,
    cancelled,
)

Session = Any  # `session.Session`, which imports this module: named, not imported
NodeServer = Any  # `node.NodeServer`: its `queue`, `pool` and `links`

__all__ = ["ServerLimits"]


class ServerLimits:
    """A ppserver's handling of `Cancel`, `JobLimits` and `Terminate` from its clients."""

    def __init__(self, server: NodeServer) -> None:
        self.server = server

    def received(self, session: Session, limits: tuple[tuple[int, float], ...]) -> None:
        """Time limits of jobs the client's next JobBatch carries."""
        pending = session.limits
        pending.update(limits)
        if len(pending) > MAX_PENDING_LIMITS:
            raise PeerError(
                f"a client sent time limits (JobLimits) for {len(pending)} jobs it has not sent: a limit "
                f"precedes the JobBatch of its job, and at most {MAX_PENDING_LIMITS} may wait"
            )

    def apply(self, session: Session, tasks: list[ServedTask]) -> None:
        """Give the tasks of a JobBatch the time limits their client sent for them (each then runs alone:
        its time counts from when a worker gets it; a limit is for the batch that follows it, never later)."""
        apply_limits(session.limits, tasks)

    def cancel(self, session: Session, job_ids: tuple[int, ...]) -> None:
        """Cancel those of the client's jobs that still wait in the queue, answering each as cancelled; a job
        already on a worker runs and reports as usual."""
        wanted = session.live.intersection(job_ids)
        if wanted:
            removed = self._unqueue(session, wanted)
            self._answer(session, [task.client_id for task in removed], CANCELLED_MESSAGE)

    def terminate(self, session: Session, job_ids: tuple[int, ...]) -> None:
        """Stop the client's jobs wherever they are, answering each as cancelled (a job that finished
        meanwhile was answered with its result already)."""
        wanted = session.live.intersection(job_ids)
        if not wanted:
            return
        stopped = [task.client_id for task in self._unqueue(session, wanted)]
        left = wanted.difference(stopped)

        def mine(task: Task) -> bool:
            served = cast("ServedTask", task)
            return served.owner is session and served.client_id in left

        server = self.server
        if left:
            for task in server.pool.holding(mine):
                if server.pool.terminate(task):
                    stopped.append(cast("ServedTask", task).client_id)
            for link in server.links:
                for task in [task for task in link.inflight.values() if mine(task)]:
                    if link.terminate(task):
                        stopped.append(cast("ServedTask", task).client_id)
        self._answer(session, stopped, TERMINATED_MESSAGE)

    def _unqueue(self, session: Session, wanted: set[int]) -> list[ServedTask]:
        removed = self.server.queue.cancel(
            session.lane,
            lambda task: cast("ServedTask", task).owner is session and task.client_id in wanted,
        )
        return cast("list[ServedTask]", removed)

    def _answer(self, session: Session, ids: list[int], message: str) -> None:
        if ids:
            self.server.counters.tally.cancelled += len(ids)
            session.live.difference_update(ids)
            session.send(ResultBatch(tuple([cancelled(job_id, message) for job_id in ids])))
