"""What a job that ran past its time limit gets, wherever it was stopped: the message and the result.

A job's time limit (`submit(timeout=)`) is enforced by whoever runs it: the local pool, a ppserver, a
dial-in worker (`ppft_worker.pool.limits`); or, for a peer that speaks protocol version 1 and so cannot be
told the limit, by the `Link` that sent the job (counted from when it was sent). All of them describe the
job the same way. This module does no I/O and decides nothing.
"""

from __future__ import annotations

import pickle
from typing import Any

from ppft_protocol import Result

from ..errors import JobTimeoutError
from .tasks import Task

__all__ = ["job_limit", "timeout_message", "timeout_result"]


def job_limit(task: Task) -> float | None:
    """The time `task` may run, in seconds, or None (no limit). Only a task that runs alone (`solo`) has
    one: the owner marks a limited job so, and callers look only at those."""
    return getattr(task, "timeout", None)


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
