"""What a job that ran past its time limit gets, wherever it was stopped: the message and the result.

A job's time limit (`submit(timeout=)`) is enforced by whoever runs it: the local pool, a ppserver, a
dial-in worker (`ppft_worker.pool.limits`); or, for a peer that speaks protocol version 1 and so cannot be
told the limit, by the `Link` that sent the job (counted from when it was sent). All of them describe the
job the same way. This module does no I/O and decides nothing.
"""

from __future__ import annotations

import pickle
from collections.abc import Iterable
from typing import Any

from ppft_protocol import Result

from ..errors import JobTimeoutError
from .tasks import Task

__all__ = ["apply_limits", "job_limit", "note_limits", "timeout_message", "timeout_result"]

_MAX_NOTED = 1 << 16  # limits noted for batches yet to come: more means they never came


def job_limit(task: Task) -> float | None:
    """The time `task` may run, in seconds, or None (no limit). Only a task that runs alone (`solo`) has
    one: the owner marks a limited job so, and callers look only at those."""
    return getattr(task, "timeout", None)


def note_limits(limits: dict[int, float], received: Iterable[tuple[int, float]]) -> None:
    """A relay (a dial-in worker, an ssh node's server) notes the time limits its peer sent (`JobLimits`,
    by the peer's job ids) for the jobs of the next `JobBatch`; bounded, as a limit precedes its batch."""
    limits.update(received)
    if len(limits) > _MAX_NOTED:
        limits.clear()


def apply_limits(limits: dict[int, float], tasks: Iterable[Any]) -> None:
    """The noted limits of these jobs (`ServedTask`s, by `client_id`): each such job runs alone, within its
    limit, which the relay's pool enforces. The rest of `limits` is dropped (they came for this batch)."""
    for task in tasks:
        limit = limits.pop(task.client_id, None)
        if limit is not None:
            task.timeout = limit
            task.solo = True
    limits.clear()


def timeout_message(job: str, where: str, limit: float, *, note: str = "") -> str:
    """What a timed-out job says: the job and its function ("job 3 (f)"), where it ran, the limit, and what
    to do."""
    return (
        f"{job} ran longer than its timeout of {limit:g} s on {where}{note}; the job is "
        f"not retried (give it a larger timeout=, or none)"
    )


def timeout_result(task: Task, message: str, output: dict[str, Any] | None = None) -> Result:
    """The failed result of `task` that ran past its limit, with `message` and what it wrote (`output`:
    the `output` and `stderr_spans` fields, when they are known)."""
    return Result(
        task.wire[0],
        False,
        error_type="ppft_worker.errors.JobTimeoutError",
        error_message=message,
        exception=pickle.dumps(JobTimeoutError(message)),
        **(output or {}),
    )
