"""Jobs arriving from a peer, turned into tasks for our own nodes: the serving side of a connection.

ppserver (for each client) and a dial-in worker (for its ppserver) both receive `FunctionBody` and
`JobBatch` messages and must run those jobs on their own pool. Job ids are renumbered on the way in, so
jobs of different peers never collide, and restored on the way out. A job whose function body never arrived is
answered at once with an error result instead of being queued.

The bodies a peer sent are kept in its `BodyTable`: each is checked against its digest before it is kept
(so it is never forwarded to a worker that caches bodies by digest for every peer), and on a version-2
connection they stay within the budget the sender counts too (`ppft_protocol.BodyLedger`). A job resolves
its body when it arrives, so a body forgotten afterwards is only let go of here: the task holds it.
"""

from __future__ import annotations

import logging
import pickle
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from typing import Any, Protocol

from ppft_protocol import BodyLedger, FunctionBody, Job, JobBatch, Message, Result, ResultBatch, check_digest

from .tasks import CANCELLED_TYPE

__all__ = [
    "TERMINATED_MESSAGE",
    "BodyTable",
    "Owner",
    "ServedTask",
    "take_jobs",
    "unknown_function_result",
    "withdraw",
]

log = logging.getLogger("ppft.intake")

TERMINATED_MESSAGE = "cancelled: its client terminated it"
"""What a relay (a dial-in worker, an ssh node's server) answers for a job its peer stopped (`Terminate`)."""

_REFUSALS_KEPT = 256  # refused digests remembered per connection, to name the mismatch in their jobs' errors
_SETUP_ERROR = "ppft_worker.errors.JobSetupError"

_new_tuple = tuple.__new__


class Owner(Protocol):
    """Whoever sent a job (a `Stream`): where its result goes, and whether anyone still wants it."""

    closed: bool

    def send(self, message: Message) -> None: ...


class ServedTask:
    """A peer's job on its way through our pool: `wire` carries our id, `client_id` the peer's."""

    # kept_output: set only for a job whose worker died while it ran (`poolout.keep_output`); timeout:
    # only for a job the peer gave a time limit (`JobLimits`), read with getattr (`timelimits.job_limit`)
    __slots__ = ("attempts", "body", "client_id", "kept_output", "owner", "solo", "timeout", "wire")
    timeout: float  # unset unless the peer gave one

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


class BodyTable:
    """The function bodies one peer sent on one connection: checked against their digests, and kept within
    `ppft_protocol.bodies.BODY_BUDGET` on a version-2 connection (every one on version 1)."""

    __slots__ = ("_bodies", "_ledger", "_refused", "peer")

    def __init__(self, peer: str) -> None:
        self.peer = peer
        self._bodies: dict[bytes, FunctionBody] = {}
        self._ledger = BodyLedger()
        self._refused: dict[bytes, str] = {}

    def __len__(self) -> int:
        return len(self._bodies)

    def get(self, digest: bytes) -> FunctionBody | None:
        return self._bodies.get(digest)

    def refusal(self, digest: bytes) -> str | None:
        """Why the body of `digest` was refused, if it was."""
        return self._refused.get(digest)

    def add(self, body: FunctionBody, version: int) -> str | None:
        """Keep `body` (forgetting the oldest beyond the budget on version 2); or refuse it, logged, and say
        why: a body whose digest does not match its content."""
        problem = check_digest(body)
        digest = body.digest
        if problem is not None:
            log.warning("%s sent a function body that is refused: %s", self.peer, problem)
            refused = self._refused
            if len(refused) >= _REFUSALS_KEPT:
                del refused[next(iter(refused))]
            refused[digest] = problem
            return problem
        self._refused.pop(digest, None)
        self._bodies[digest] = body
        if version < 2:
            self._ledger.budget = None
        for old in self._ledger.add(body):
            del self._bodies[old]
        return None


def take_jobs(
    bodies: BodyTable, batch: JobBatch, ids: Iterator[int], owner: Owner
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
            unknown.append(unknown_function_result(job, bodies.refusal(digest)))
        else:
            append(ServedTask(_new_tuple(Job, (new_id(), body.digest, args, proto)), body, owner, job_id))
    return tasks, unknown


def unknown_function_result(job: Job, refusal: str | None = None) -> Result:
    """The error result of a job whose body is not here: never sent, or `refusal` says why it was refused
    (then a `JobSetupError`, as a worker reports a body it cannot use)."""
    if refusal is not None:
        from ..errors import JobSetupError  # noqa: PLC0415 - only a refused body's jobs need it

        message = f"job {job.job_id} cannot run: {refusal}"
        try:
            exception = pickle.dumps(JobSetupError(message), job.pickle_protocol)
        except (ValueError, pickle.PicklingError):  # a pickle protocol this Python does not have
            exception = b""
        return Result(
            job.job_id,
            False,
            b"",
            "",
            0.0,
            0.0,
            _SETUP_ERROR,
            message,
            f"{_SETUP_ERROR}: {message}\n",
            exception,
        )
    message = (
        f"job {job.job_id} refers to function {job.digest.hex()[:12]} that was never sent on this "
        f"connection; this is a client bug: send the FunctionBody before the jobs that use it"
    )
    return Result(job.job_id, False, b"", "", 0.0, 0.0, "ppft_protocol.errors.RemoteProtocolError", message)


def withdraw(
    queue: deque[Any],
    job_ids: Iterable[int],
    message: str,
    abandon: Callable[[Callable[[Any], bool]], list[Any]] | None = None,
) -> ResultBatch | None:
    """A relay's answer to its peer giving up these jobs (by the peer's ids; a dial-in worker's ppserver, an
    ssh node's client): those still in `queue` leave it; with `abandon` (its pool's), those in flight are
    stopped too (their worker killed and replaced, or told to skip them). Each is answered as cancelled
    with `message`; None when none of them was here."""
    wanted = set(job_ids)

    def unwanted(task: ServedTask) -> bool:
        return task.client_id in wanted

    gone = [task for task in queue if unwanted(task)]
    if gone:
        kept = [task for task in queue if not unwanted(task)]
        queue.clear()
        queue.extend(kept)
    if abandon is not None:
        gone += abandon(unwanted)
    if not gone:
        return None
    return ResultBatch(tuple(
        Result(task.client_id, False, error_type=CANCELLED_TYPE, error_message=message) for task in gone
    ))  # fmt: skip
