"""How the client's jobs ended, counted for the status page and metrics (`status.client_status` shows them).

Every job passes `Scheduler._finished` exactly once, under the scheduler's `done_lock`, which is where its
outcome is counted: one check per job in a loop that already visits each job, and a closer look only at the
jobs that did not return. This module only adds to `Counters`; it never blocks and never raises for a job.
"""

from __future__ import annotations

from concurrent.futures import CancelledError
from typing import Any

from ppft_worker.observe import Counters, outcome_of

from .errors import DestroyedServerError, NodeLostError, WorkerLostError

__all__ = ["count_finished", "outcome"]


def outcome(exc: BaseException) -> str:
    """How a job that failed with `exc` ended: "lost", "cancelled", "timeout" or "error"."""
    if isinstance(exc, (WorkerLostError, NodeLostError)):
        return "lost"
    if isinstance(exc, (DestroyedServerError, CancelledError)):
        return "cancelled"  # the server was destroyed before the job could finish
    cls = type(exc)
    return outcome_of(f"{cls.__module__}.{cls.__qualname__}")


def count_finished(counters: Counters, total: int, failed: list[Any] | None, cancelled: bool) -> None:
    """`total` jobs finished (`failed`: those of them that have an exception; `cancelled`: all were)."""
    tally = counters.tally
    if cancelled:
        tally.cancelled += total
    elif not failed:
        tally.ok += total
    else:
        tally.ok += total - len(failed)
        for job in failed:
            kind = outcome(job._exception)
            setattr(tally, kind, getattr(tally, kind) + 1)
    counters.rate.add(total)
