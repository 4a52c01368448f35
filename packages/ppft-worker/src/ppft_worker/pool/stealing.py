"""Work stealing: when a local worker idles while another sits on a frame that is running long, take back
the tail of that frame so the idle worker can run it.

The batching learns run times from past results, so a function known as tiny can put 16 long jobs on one
worker in one frame. The pool then sends that worker a `Cancel` for the second half of its jobs in flight
(a worker runs its jobs in order, so the tail is what has not started); the jobs the worker answers as
cancelled go back to the owner's queue head, and the ones that had started report normally: each job still
has exactly one result.

This module holds the decisions only (who is idle, who is robbed, which job ids, what comes back), on plain
attributes, so they are tested without processes. It must never do I/O, and never touch a job that must run
alone (`solo`) or a retiring worker.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Generic, Protocol, TypeVar

from ppft_protocol import Result

from ..runtime import CANCELLED_TYPE, Loop, Task, Timer

__all__ = [
    "STEAL_AFTER",
    "Stealable",
    "Stealer",
    "plan_steals",
    "reclaim",
    "seconds_to_next_check",
]

log = logging.getLogger("ppft.pool")

STEAL_AFTER = 0.020
"""A frame is robbed only once its worker has sent no result for this long: below it, the idle worker would
take jobs that were about to run anyway, for the price of a round trip."""


class Stealable(Protocol):
    """What the decisions read of a pool's worker."""

    ready: bool
    retiring: bool
    solo_busy: bool
    inflight: dict[int, Task]  # job id -> task, in the order the worker runs them
    stolen: set[int]  # ids of a pending steal: a Cancel was sent, their results have not come back
    since: float  # monotonic time of the worker's last frame sent while it was idle, or its last result

    @property
    def standing_by(self) -> bool: ...  # a recycled worker's replacement, taking no job until it leaves


W = TypeVar("W", bound=Stealable)


def _idle(w: Stealable) -> bool:
    return w.ready and not w.retiring and not w.solo_busy and not w.inflight and not w.standing_by


def _robbable(w: Stealable) -> bool:
    return w.ready and not w.retiring and not w.solo_busy and not w.stolen and len(w.inflight) >= 2


def _tail(w: Stealable) -> tuple[int, ...]:
    """The second half of `w`'s jobs in flight, the last ones it will run; never a solo job."""
    ids = list(w.inflight)
    tail = ids[len(ids) - len(ids) // 2 :]
    inflight = w.inflight
    return tuple(job_id for job_id in tail if not inflight[job_id].solo)


def plan_steals(
    workers: Sequence[W], now: float, after: float = STEAL_AFTER
) -> list[tuple[W, tuple[int, ...]]]:
    """(victim, job ids to cancel) for each idle worker, robbing first the worker with the most jobs in
    flight among those that have sent no result for `after` seconds and have no steal pending."""
    idle = sum(1 for w in workers if _idle(w))
    if not idle:
        return []
    victims = [w for w in workers if _robbable(w) and now - w.since >= after]
    victims.sort(key=lambda w: len(w.inflight), reverse=True)
    steals: list[tuple[W, tuple[int, ...]]] = []
    for w in victims[:idle]:
        ids = _tail(w)
        if ids:
            steals.append((w, ids))
    return steals


def seconds_to_next_check(
    workers: Sequence[Stealable], now: float, after: float = STEAL_AFTER
) -> float | None:
    """When to look again (seconds from `now`, at least `after` / 4), or None while no worker idles or none
    has two jobs in flight that could be taken: a frame sent or a worker emptied starts the watch again."""
    if not any(_idle(w) for w in workers):
        return None
    due: float | None = None
    for w in workers:
        if _robbable(w):
            wait = max(after / 4, w.since + after - now)
            if due is None or wait < due:
                due = wait
    return due


def reclaim(w: Stealable, results: Iterable[Result]) -> list[Task]:
    """Settle a pending steal from a result frame: a stolen job the worker cancelled leaves `w.inflight`
    and is returned, to be queued again (its cancelled result must neither complete it nor teach the
    batching a run time); a stolen job that had started completes normally, once."""
    stolen = w.stolen
    inflight = w.inflight
    back: list[Task] = []
    for result in results:
        job_id = result.job_id
        if job_id in stolen:
            stolen.discard(job_id)
            if not result.ok and result.error_type == CANCELLED_TYPE:
                task = inflight.pop(job_id, None)
                if task is not None:
                    back.append(task)
    return back


class Stealer(Generic[W]):
    """The pool's watch for steals: one timer, armed when a frame of two jobs or more goes out and kept
    while a worker idles next to a frame that could be robbed; nothing per job."""

    __slots__ = ("_cancel", "_loop", "_timer", "_workers", "closed")

    def __init__(self, loop: Loop, workers: list[W], cancel: Callable[[W, tuple[int, ...]], None]) -> None:
        self._loop = loop
        self._workers = workers  # the pool's own list: workers come and go in it
        self._cancel = cancel  # sends the victim a Cancel for these ids
        self._timer: Timer | None = None
        self.closed = False

    def sent(self, w: W) -> None:
        """A frame went to `w`."""
        if self._timer is None and len(w.inflight) >= 2:
            self._timer = self._loop.call_later(STEAL_AFTER, self.check, self._check_failed)

    def joined(self) -> None:
        """A worker became ready: an idle one now, which may rob a frame that went out before it could take
        any. Looked at shortly, once the pool had its chance to give it queued jobs instead."""
        if self._timer is None and not self.closed:
            self._timer = self._loop.call_later(STEAL_AFTER, self.check, self._check_failed)

    def emptied(self) -> None:
        """A worker finished its last job: rob a frame running long now rather than at the next tick."""
        if self._timer is not None:
            self._timer.cancel()
            self.check()

    def check(self) -> None:
        self._timer = None
        if self.closed:
            return
        now = time.monotonic()
        for w, ids in plan_steals(self._workers, now):
            log.debug(
                "a worker idles: taking back %d of the %d job(s) in flight on %r",
                len(ids),
                len(w.inflight),
                w,
            )
            w.stolen.update(ids)
            self._cancel(w, ids)
        wait = seconds_to_next_check(self._workers, now)
        if wait is not None:
            self._timer = self._loop.call_later(wait, self.check, self._check_failed)

    def _check_failed(self, exc: BaseException) -> None:
        """`check` raised (the loop logged it): no steal this time; the next frame sent arms the timer."""
        self._timer = None

    def close(self) -> None:
        self.closed = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
