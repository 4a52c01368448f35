"""take_batch: what one frame of jobs may hold."""

from __future__ import annotations

from collections import deque

from ppft_protocol import FunctionBody, Job
from ppft_worker.runtime.batching import Batching
from ppft_worker.runtime.tasks import take_batch

TINY = FunctionBody(b"t" * 32, "tiny", ("def tiny():\n    pass\n",))
LONG = FunctionBody(b"l" * 32, "long", ("def long():\n    pass\n",))


class FakeTask:
    def __init__(
        self, job_id: int, body: FunctionBody, *, solo: bool = False, cancelled: bool = False
    ) -> None:
        self.wire = Job(job_id, body.digest, b"", 5)
        self.body = body
        self.attempts = 0
        self.solo = solo
        self.cancelled = cancelled

    def claim(self) -> bool:
        return not self.cancelled


def learned() -> Batching:
    batching = Batching()
    batching.learn(TINY.digest, 1e-6)  # tiny: big frames
    batching.learn(LONG.digest, 1.0)  # long: one at a time
    return batching


def ids(batch):
    return [task.wire.job_id for task in batch]


def test_a_solo_task_at_the_head_travels_alone():
    queue = deque([FakeTask(1, TINY, solo=True), FakeTask(2, TINY), FakeTask(3, TINY)])
    assert ids(take_batch(queue, 100, learned())) == [1]
    assert ids(queue) == [2, 3]


def test_a_frame_stops_before_a_solo_task():
    queue = deque([FakeTask(1, TINY), FakeTask(2, TINY, solo=True), FakeTask(3, TINY)])
    assert ids(take_batch(queue, 100, learned())) == [1]


def test_a_long_or_unknown_function_does_not_ride_with_tiny_jobs():
    unknown = FunctionBody(b"u" * 32, "unknown", ("def unknown():\n    pass\n",))
    queue = deque([FakeTask(1, TINY), FakeTask(2, TINY), FakeTask(3, LONG), FakeTask(4, unknown)])
    assert ids(take_batch(queue, 100, learned())) == [1, 2]
    assert ids(take_batch(queue, 1, learned())) == [3]
    assert ids(take_batch(queue, 1, learned())) == [4]


def test_cancelled_tasks_are_dropped_and_the_queue_always_shrinks():
    queue = deque([FakeTask(1, TINY, cancelled=True), FakeTask(2, TINY, cancelled=True), FakeTask(3, LONG)])
    assert take_batch(queue, 2, learned()) == []
    assert ids(queue) == [3]


def test_limit_is_respected():
    queue = deque(FakeTask(i, TINY) for i in range(10))
    assert ids(take_batch(queue, 4, learned())) == [0, 1, 2, 3]


def test_a_frame_stops_once_its_arguments_reach_the_byte_cap():
    from ppft_worker.runtime.tasks import MAX_FRAME_ARGS

    big = []
    for i in range(6):
        task = FakeTask(i, TINY)
        task.wire = Job(i, TINY.digest, b"x" * (MAX_FRAME_ARGS // 4), 5)
        big.append(task)
    queue = deque(big)
    assert ids(take_batch(queue, 256, learned())) == [0, 1, 2, 3]


class Broken(Exception):
    pass


class ClaimFails(FakeTask):
    def claim(self) -> bool:
        raise Broken("claim")


def test_a_failure_while_taking_puts_every_task_back_at_the_head_in_order():
    queue = deque([FakeTask(1, TINY), FakeTask(2, TINY), ClaimFails(3, TINY), FakeTask(4, TINY)])
    try:
        take_batch(queue, 100, learned())
    except Broken:
        pass
    else:
        raise AssertionError("the failure was swallowed")
    assert ids(queue) == [1, 2, 3, 4]


def test_adopt_puts_tasks_on_the_books_once():
    from ppft_worker.runtime.tasks import adopt

    inflight = {1: FakeTask(1, TINY)}
    first = inflight[1]
    adopt(inflight, [FakeTask(1, TINY), FakeTask(2, TINY)])
    assert list(inflight) == [1, 2] and inflight[1] is first
