"""What nodes take from their owner's queue, and how a frame's worth of it is taken."""

from __future__ import annotations

from typing import Protocol

from ppft_protocol import FunctionBody, Job

from .batching import Batching

__all__ = ["MAX_FRAME_ARGS", "Task", "TaskQueue", "take_batch"]

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
    `MAX_FRAME_ARGS` bytes. Cancelled tasks are dropped on the way,
    so the result may be empty, but the queue always shrinks."""
    batch: list[Task] = []
    head = queue.popleft()
    if head.claim():
        batch.append(head)
    if head.solo:
        return batch
    head_digest = head.body.digest
    size = len(head.wire.args)
    while queue and len(batch) < limit and size < MAX_FRAME_ARGS:
        task = queue[0]
        if task.solo:
            break
        digest = task.body.digest
        if digest != head_digest and batching.limits(digest)[0] < limit:
            break
        queue.popleft()
        if task.claim():
            batch.append(task)
            size += len(task.wire.args)
    return batch
