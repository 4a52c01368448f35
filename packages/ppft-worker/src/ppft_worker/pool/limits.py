"""Limits on a pool's workers: the time limits of running jobs (`Deadlines`) and the memory limit of each
worker (`MemoryWatch`), and what a job stopped by either gets as its result.

Memory: a worker whose resident memory passes the limit is killed and replaced; the job it was running fails
with `WorkerLostError` naming the figures (it would pass the limit again), the jobs behind it run again
elsewhere, charged nothing. A worker's memory is read every `MEMORY_INTERVAL` seconds, so a job that
allocates fast can pass the limit by what it allocates in that time before it is stopped.

A job with a time limit is sent alone to an idle worker (its owner marks it `solo`), so the moment it is sent
is the moment it starts, and killing its worker when the limit is up costs no other job anything. Each worker
holds at most one deadline (`PoolWorker.deadline`); `Deadlines` keeps one timer on the pool's loop, armed
for the earliest of them, and only while such a job runs: a pool whose jobs have no limit never arms it, and
the tiny-job path reads nothing of this.

The decision whether a job ran past its limit is taken on the I/O thread, the thread that also takes in its
result, so a job that finishes in the same instant its deadline passes has exactly one outcome: whichever
the loop saw first. This module must never do I/O, and never kill a process itself (the pool does).
"""

from __future__ import annotations

import logging
import os
import pickle
import time
from collections.abc import Callable

from ppft_protocol import Result

from ..errors import WorkerLostError
from ..runtime import (
    Loop,
    Task,
    Timer,
    format_bytes,
    job_limit,
    resident_bytes,
    timeout_message,
    timeout_result,
)
from .output import lost_fields
from .worker import PoolWorker

__all__ = ["MEMORY_INTERVAL", "Deadlines", "MemoryWatch", "job_limit", "memory_result", "pool_timeout_result"]

log = logging.getLogger("ppft.pool")


class Deadlines:
    """The deadlines of the limited jobs running on a pool's workers, and the one timer that watches them."""

    __slots__ = ("_loop", "_on_expired", "_timer", "_workers")

    def __init__(
        self, loop: Loop, workers: list[PoolWorker], on_expired: Callable[[PoolWorker, Task, float], None]
    ) -> None:
        self._loop = loop
        self._workers = workers  # the pool's own list: workers come and go in it
        self._on_expired = on_expired
        self._timer: Timer | None = None

    def started(self, w: PoolWorker, task: Task, limit: float) -> None:
        """`task`, limited to `limit` seconds, was just sent to the idle worker `w`."""
        when = time.monotonic() + limit
        w.deadline = (when, task, limit)
        timer = self._timer
        if timer is None or when < timer.when:
            if timer is not None:
                timer.cancel()
            self._timer = self._loop.call_later(limit, self.check, self._check_failed)

    def check(self) -> None:
        """Expire the jobs whose limit is up (a job that finished meanwhile is no longer in flight: its
        deadline is just dropped); arm the timer for the next one."""
        self._timer = None
        now = time.monotonic()
        due: float | None = None
        for w in list(self._workers):
            deadline = w.deadline
            if deadline is None:
                continue
            when, task, limit = deadline
            if w.inflight.get(task.wire[0]) is not task:
                w.deadline = None  # finished (or taken back) before its time was up
                continue
            if when <= now:
                w.deadline = None
                self._on_expired(w, task, limit)
            elif due is None or when < due:
                due = when
        if due is not None:
            self._timer = self._loop.call_later(max(0.0, due - now), self.check, self._check_failed)

    def _check_failed(self, exc: BaseException) -> None:
        """`check` raised (the loop logged it): look again shortly rather than never."""
        self._timer = self._loop.call_later(0.1, self.check, self._check_failed)

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None


def job_name(task: Task, ids_known: bool) -> str:
    """How a message names `task`: "job 3 (f)", by the id its submitter knows (the peer's for a job a peer
    sent); "the job (f)" when that id is not known here (a dial-in worker knows only its ppserver's)."""
    function = task.body.name or "a pickled callable"
    return (
        f"job {getattr(task, 'client_id', task.wire[0])} ({function})"
        if ids_known
        else f"the job ({function})"
    )


def pool_timeout_result(w: PoolWorker, task: Task, limit: float, node: str, ids_known: bool) -> Result:
    """The result of `task`, stopped on `w` when its `limit` was up, with the output it wrote."""
    _, output = lost_fields(task)
    message = timeout_message(
        job_name(task, ids_known), f"{node} {w!r}", limit, note="; its worker was killed and replaced"
    )
    result = timeout_result(task, message, output)
    return result._replace(wall_time=limit)


MEMORY_INTERVAL = 0.5
"""Seconds between two looks at the workers' resident memory, when a pool has a memory limit."""


class MemoryWatch:
    """A pool's memory limit: every `MEMORY_INTERVAL` seconds, one read of each worker's resident memory
    (`resident_bytes`); a worker over `limit` goes to `on_over(w, rss)`. One timer on the pool's loop, and
    nothing on the way of a job. Where the system does not say a process's memory (no /proc), it logs that
    once and watches nothing."""

    __slots__ = ("_loop", "_on_over", "_timer", "_workers", "limit")

    def __init__(
        self, loop: Loop, workers: list[PoolWorker], limit: int, on_over: Callable[[PoolWorker, int], None]
    ) -> None:
        self._loop = loop
        self._workers = workers
        self.limit = limit
        self._on_over = on_over
        self._timer: Timer | None = None
        if resident_bytes(os.getpid()) is None:
            log.warning(
                "the worker memory limit of %s cannot be enforced here: this system does not report a "
                "process's resident memory (/proc/PID/statm)", format_bytes(limit),
            )  # fmt: skip
        else:
            self._timer = loop.call_later(MEMORY_INTERVAL, self.check, self._check_failed)

    def check(self) -> None:
        for w in list(self._workers):
            if w.rfd < 0:
                continue
            rss = resident_bytes(w.pid)
            if rss is not None and rss > self.limit:
                self._on_over(w, rss)
        self._timer = self._loop.call_later(MEMORY_INTERVAL, self.check, self._check_failed)

    def _check_failed(self, exc: BaseException) -> None:
        self._timer = self._loop.call_later(MEMORY_INTERVAL, self.check, self._check_failed)

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None


def memory_result(w: PoolWorker, task: Task, rss: int, limit: int, ids_known: bool) -> Result:
    """The result of `task`, whose worker `w` was stopped over the memory limit while it ran it: a
    `WorkerLostError` that says so, with the figures, and the output the job wrote."""
    said, output = lost_fields(task)
    message = (
        f"{w!r} was stopped: its resident memory, {format_bytes(rss)}, passed the worker memory limit of "
        f"{format_bytes(limit)} while it ran {job_name(task, ids_known)}, so the job is not retried; give "
        f"the workers more memory (worker_memory_limit=, ppserver --worker-memory-limit, "
        f"ssh://host?worker_memory_limit=) or make the job use less{said}"
    )
    return Result(
        task.wire[0],
        False,
        error_type="ppft_worker.errors.WorkerLostError",
        error_message=message,
        exception=pickle.dumps(WorkerLostError(message)),
        **output,  # type: ignore[arg-type]
    )
