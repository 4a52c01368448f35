"""Time limits of running jobs: the deadlines of a pool's jobs that have a `timeout`, and what a job that ran
past its limit gets as its result.

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

import time
from collections.abc import Callable

from ppft_protocol import Result

from ..runtime import Loop, Task, Timer, job_limit, timeout_message, timeout_result
from .output import lost_fields
from .worker import PoolWorker

__all__ = ["Deadlines", "job_limit", "pool_timeout_result"]


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


def pool_timeout_result(w: PoolWorker, task: Task, limit: float, node: str) -> Result:
    """The result of `task`, stopped on `w` when its `limit` was up, with the output it wrote. A job a
    peer sent is named by the peer's id for it."""
    _, output = lost_fields(task)
    name = task.body.name or "a pickled callable"
    job = getattr(task, "client_id", task.wire[0])
    message = timeout_message(job, name, f"{node} {w!r}", limit, note="; its worker was killed and replaced")
    result = timeout_result(task, message, output)
    return result._replace(wall_time=limit)
