"""Jobs arriving from a peer, turned into tasks for our own nodes: the serving side of a connection.

ppserver (for each client) and a dial-in worker (for its ppserver) both receive `FunctionBody` and
`JobBatch` messages and must run those jobs on their own pool. Job ids are renumbered on the way in, so
jobs of different peers never collide, and restored on the way out. A job whose function body never arrived is
answered at once with an error result instead of being queued.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Protocol

from ppft_protocol import FunctionBody, Job, JobBatch, Message, Result

__all__ = ["Owner", "ServedTask", "take_jobs", "unknown_function_result"]

_new_tuple = tuple.__new__


class Owner(Protocol):
    """Whoever sent a job (a `Stream`): where its result goes, and whether anyone still wants it."""

    closed: bool

    def send(self, message: Message) -> None: ...


class ServedTask:
    """A peer's job on its way through our pool: `wire` carries our id, `client_id` the peer's."""

    # kept_output: set only for a job whose worker died while it ran (`poolout.keep_output`)
    __slots__ = ("attempts", "body", "client_id", "kept_output", "owner", "solo", "wire")

    def __init__(self, wire: Job, body: FunctionBody, owner: Owner, client_id: int) -> None:
        self.wire = wire
        self.body = body
        self.owner = owner  # whoever sent it; `closed` tells whether anyone still wants the result
        self.client_id = client_id
        self.attempts = 0
        self.solo = False

    def claim(self) -> bool:
        return not self.owner.closed

    @staticmethod
    def claim_all(tasks: list[ServedTask]) -> list[ServedTask]:
        """`claim` for a frame's worth of tasks in one pass (`take_batch` uses it): those still wanted."""
        return [task for task in tasks if not task.owner.closed]

    def result_for_peer(self, result: Result) -> Result:
        # tuple.__new__ rather than `_replace`: a quarter of the cost, once per job on ppserver's hot path
        return _new_tuple(Result, (self.client_id, *result[1:]))


def take_jobs(
    bodies: dict[bytes, FunctionBody], batch: JobBatch, ids: Iterator[int], owner: Owner
) -> tuple[list[ServedTask], list[Result]]:
    """The batch as tasks renumbered from `ids`, and error results for jobs whose body is unknown.

    Runs once per frame for up to hundreds of jobs, mostly of one function: the body is looked up again
    only when the digest changes, and every task of a function shares its body's digest object (so the
    pool's identity checks on it hold and its hash is computed once)."""
    tasks: list[ServedTask] = []
    unknown: list[Result] = []
    append = tasks.append
    new_id = ids.__next__
    last: bytes | None = None
    body: FunctionBody | None = None
    for job in batch.jobs:
        job_id, digest, args, proto = job
        if digest != last:
            body = bodies.get(digest)
            last = digest
        if body is None:
            unknown.append(unknown_function_result(job))
        else:
            append(ServedTask(_new_tuple(Job, (new_id(), body.digest, args, proto)), body, owner, job_id))
    return tasks, unknown


def unknown_function_result(job: Job) -> Result:
    message = (
        f"job {job.job_id} refers to function {job.digest.hex()[:12]} that was never sent on this "
        f"connection; this is a client bug: send the FunctionBody before the jobs that use it"
    )
    return Result(job.job_id, False, b"", "", 0.0, 0.0, "ppft_protocol.errors.RemoteProtocolError", message)
