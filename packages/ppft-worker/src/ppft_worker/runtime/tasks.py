"""What nodes take from their owner's queue, how a frame's worth of it is taken, and how results come back.

Both run on the I/O thread once per frame, for up to 256 jobs: they allocate nothing per job that they
can avoid.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from ppft_protocol import (
    BodyLedger,
    Connection,
    FunctionBody,
    Job,
    JobBatch,
    Pickled,
    Result,
    ResultBatch,
    is_pickled,
)
from ppft_protocol.relay import RawResults

from ..mapped import SEGMENT_MIN
from ..oob import OOB_MIN, flatten
from .batching import Batching

__all__ = [
    "CANCELLED_TYPE",
    "MAX_FRAME_ARGS",
    "Task",
    "TaskQueue",
    "adopt",
    "collect_raw_results",
    "collect_results",
    "send_batch",
    "take_batch",
]

CANCELLED_TYPE = "concurrent.futures.CancelledError"
"""The error type of a result a node made for a job it dropped on `Cancel` (a worker, a dial-in worker, a
ppserver): the job never ran there, so its owner may run it elsewhere (`Link`, the pool's work stealing)."""

MAX_FRAME_ARGS = 1 << 20
"""A frame stops taking jobs once their arguments reach this many bytes: jobs are batched by run time,
and a fast job with a large payload (an echo of 1 MiB) must not pile 30 MiB on one worker while another
idles."""


class Task(Protocol):
    """What the pool needs of a queued job. The owner's job objects implement it."""

    wire: Job  # the job as it goes on the wire (its id is unique within the pool's owner)
    body: FunctionBody
    attempts: int  # times a worker died while this task ran alone
    solo: bool  # run it alone: it was running when a worker died

    def claim(self) -> bool:
        """Called as the task leaves the queue for a worker: False drops it (it was cancelled)."""
        ...


class TaskQueue(Protocol):
    """Where nodes take tasks from: a `deque`, or ppserver's queue that is fair across its clients."""

    def __len__(self) -> int: ...
    def __getitem__(self, index: int) -> Task: ...
    def popleft(self) -> Task: ...


def take_batch(queue: TaskQueue, limit: int, batching: Batching) -> list[Task]:
    """Up to `limit` tasks from the head of `queue` for one frame; at least one task leaves the queue.

    A task that must run alone (`solo`) at the head is taken alone; elsewhere the frame stops before it.
    The frame also stops before a task of another function whose own batch size is smaller (a long or
    unknown function must not ride along in a frame of tiny jobs), and once its arguments reach
    `MAX_FRAME_ARGS` bytes. The tasks taken are then claimed, all at once when their class offers
    `claim_all(tasks) -> claimed` (one lock round trip for the frame), else one by one; cancelled tasks
    are dropped, so the result may be empty (or short), but the queue always shrinks.

    If anything fails on the way, the tasks taken are put back at the head of `queue` before the error
    propagates: a task never leaves the queue without reaching its taker."""
    head = queue.popleft()
    batch = [head]
    try:
        if head.solo:
            return [head] if head.claim() else []
        append = batch.append
        popleft = queue.popleft
        head_body = head.body
        size = len(head.wire.args)
        for _ in range(min(limit - 1, len(queue))):  # other threads may append meanwhile, never take
            if size >= MAX_FRAME_ARGS:
                break
            task = queue[0]
            if task.solo:
                break
            body = task.body
            if (
                body is not head_body
                and body.digest != head_body.digest
                and batching.limits(body.digest)[0] < limit
            ):
                break
            append(popleft())
            size += len(task.wire.args)
        claim_all = getattr(head, "claim_all", None)
        if claim_all is not None:
            return claim_all(batch)  # type: ignore[no-any-return]
        return [task for task in batch if task.claim()]
    except BaseException:
        _put_back(queue, batch)
        raise


def _put_back(queue: TaskQueue, tasks: list[Task]) -> None:
    """`tasks` back at the head of `queue`, in order (a deque; or ppserver's queue, through `requeue`)."""
    requeue = getattr(queue, "requeue", None)
    if requeue is not None:
        requeue(tasks)
    else:
        queue.extendleft(reversed(tasks))  # type: ignore[attr-defined]


def adopt(inflight: dict[int, Task], tasks: list[Task]) -> None:
    """Record `tasks` in flight (those not there yet): a node whose sending failed midway keeps them on its
    books, so that whoever takes its jobs back (`take_inflight`, as for a lost node) gets them all."""
    for task in tasks:
        inflight.setdefault(task.wire[0], task)


def collect_results(
    batch: ResultBatch, pop: Callable[[int, None], Task | None], batching: Batching
) -> tuple[list[tuple[Task, Result]], float]:
    """The (task, result) pairs of a result frame whose tasks `pop` (an in-flight dict's) still had, and
    their total run time; `batching` learns their functions' run times on the way.

    A result whose task is no longer in flight (its worker was declared lost, say) is dropped: results
    arrive exactly once."""
    done: list[tuple[Task, Result]] = []
    append = done.append
    total = 0.0
    first: FunctionBody | None = None
    mixed = False
    for result in batch.results:
        task = pop(result[0], None)  # result[0], [4]: job_id, wall_time (an index beats the attribute)
        if task is not None:
            append((task, result))
            total += result[4]
            body = task.body
            if body is not first:  # the same function's tasks share one body object
                if first is None:
                    first = body
                else:
                    mixed = True
    if first is not None:
        if mixed:
            batching.learn_results([(task.body.digest, result.wall_time) for task, result in done])
        else:
            batching.learn(first.digest, total / len(done))
    return done, total


def collect_raw_results(
    batch: RawResults, pop: Callable[[int, None], Task | None], batching: Batching
) -> tuple[list[Task | None], int, float]:
    """`collect_results` for a result frame left undecoded: the task of each result (None for a result
    whose task is no longer in flight: it is dropped), how many were found, and their total run time."""
    tasks = [pop(job_id, None) for job_id in batch.job_ids]
    first: FunctionBody | None = None
    mixed = False
    lost = 0
    for task in tasks:
        if task is None:
            lost += 1
        elif task.body is not first:
            if first is None:
                first = task.body
            else:
                mixed = True
    walls = batch.wall_times
    if not lost:
        done = len(tasks)
        total = sum(walls)
    else:
        done = len(tasks) - lost
        total = sum([wall for task, wall in zip(tasks, walls, strict=True) if task is not None])
    if first is not None:
        if mixed:
            batching.learn_results(
                [
                    (task.body.digest, wall)
                    for task, wall in zip(tasks, walls, strict=True)
                    if task is not None
                ]
            )
        else:
            batching.learn(first.digest, total / done)
    return tasks, done, total


def send_batch(
    conn: Connection,
    bodies: BodyLedger,
    inflight: dict[int, Task],
    tasks: list[Task],
    local_args: Callable[[Task], bytes | None] | None = None,
) -> None:
    """Queue `tasks` as one frame on `conn`: each function body the peer does not hold goes first, and
    every task is recorded `inflight` by its job id, before anything is encoded (so a failure on the way
    leaves no task off the books).

    `bodies` is the connection's ledger of what the peer holds: a body is sent once per connection, and on
    a version-2 connection again once the budget rule (`ppft_protocol.BodyLedger`, which the peer follows
    too) has made the peer forget it. A ledger made before the handshake learns the version here.
    `local_args`: a local pool's own workers get a task's arguments with out-of-band buffers (a `Pickled`, or
    a buffered pickle as it arrived of `SEGMENT_MIN` bytes and more) as what it gives, when not None
    (`ppft_worker.mapped`: their buffers in a shared segment)."""
    wires: list[Job] = []
    add = wires.append
    new: list[FunctionBody] = []
    last: FunctionBody | None = None
    for task in tasks:
        body = task.body
        if body is not last:  # a frame's tasks mostly share one body
            last = body
            if body.digest not in bodies:
                if conn.version < 2:
                    bodies.budget = None  # version 1: the peer keeps every body for the connection
                bodies.add(body)
                new.append(body)
        wire = task.wire
        inflight[wire[0]] = task  # wire[0]: job_id (an index beats the attribute)
        if local_args is not None and (wire[2].__class__ is Pickled or len(wire[2]) >= SEGMENT_MIN):
            field = local_args(task)
            if field is not None:
                wire = task.wire._replace(args=field)  # (`local_args` may have given the task a snapshot)
        add(wire)
    for body in new:
        conn.send(body)
    if conn.version < 2:
        wires = _plain(wires)
    conn.send(JobBatch(tuple(wires)))


def _plain(wires: list[Job]) -> list[Job]:
    """Jobs for a version-1 peer: arguments with out-of-band buffers (`ppft_worker.oob`) as plain pickles."""
    plain = wires
    for index, job in enumerate(wires):
        args = job[2]
        if len(args) >= OOB_MIN and is_pickled(args):
            if plain is wires:
                plain = list(wires)
            plain[index] = job._replace(args=flatten(args))
    return plain
