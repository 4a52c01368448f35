"""What nodes take from their owner's queue, how a frame's worth of it is taken, and how results come back.

Both run on the I/O thread once per frame, for up to 256 jobs: they allocate nothing per job that they
can avoid.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from ppft_protocol import Connection, FunctionBody, Job, JobBatch, Result, ResultBatch

from .batching import Batching

__all__ = ["MAX_FRAME_ARGS", "Task", "TaskQueue", "collect_results", "send_batch", "take_batch"]

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
    are dropped, so the result may be empty (or short), but the queue always shrinks."""
    head = queue.popleft()
    if head.solo:
        return [head] if head.claim() else []
    batch = [head]
    append = batch.append
    head_digest = head.body.digest
    size = len(head.wire.args)
    while queue and len(batch) < limit and size < MAX_FRAME_ARGS:
        task = queue[0]
        if task.solo:
            break
        digest = task.body.digest
        if digest is not head_digest and digest != head_digest and batching.limits(digest)[0] < limit:
            break
        queue.popleft()
        append(task)
        size += len(task.wire.args)
    claim_all = getattr(head, "claim_all", None)
    if claim_all is not None:
        return claim_all(batch)  # type: ignore[no-any-return]
    return [task for task in batch if task.claim()]


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
    first: bytes | None = None
    mixed = False
    for result in batch.results:
        task = pop(result.job_id, None)
        if task is not None:
            append((task, result))
            total += result.wall_time
            digest = task.wire.digest
            if digest is not first:  # the same function's jobs share one digest object
                if first is None:
                    first = digest
                else:
                    mixed = True
    if first is not None:
        if mixed:
            batching.learn_results([(task.wire.digest, result.wall_time) for task, result in done])
        else:
            batching.learn(first, total / len(done))
    return done, total


def send_batch(conn: Connection, bodies: set[bytes], inflight: dict[int, Task], tasks: list[Task]) -> None:
    """Queue `tasks` as one frame on `conn`: each function body the peer has not seen goes first, once
    per connection (`bodies` remembers), and every task is recorded `inflight` by its job id."""
    for task in tasks:
        body = task.body
        if body.digest not in bodies:
            bodies.add(body.digest)
            conn.send(body)
        inflight[task.wire.job_id] = task
    conn.send(JobBatch(tuple([task.wire for task in tasks])))
