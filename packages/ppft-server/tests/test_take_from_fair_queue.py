"""A failure while a node takes jobs from ppserver's `FairQueue` loses none: they go back to its front."""

from __future__ import annotations

from collections import deque

import pytest

from ppft_protocol import FunctionBody, Job
from ppft_server.fairqueue import FairQueue
from ppft_worker.runtime.batching import Batching
from ppft_worker.runtime.tasks import take_batch

BODY = FunctionBody(b"t" * 32, "tiny", ("def tiny():\n    pass\n",))


class Broken(Exception):
    pass


class Task:
    def __init__(self, job_id: int, fails: bool = False) -> None:
        self.wire = Job(job_id, BODY.digest, b"", 5)
        self.body = BODY
        self.attempts = 0
        self.solo = False
        self.fails = fails

    def claim(self) -> bool:
        if self.fails:
            raise Broken("claim")
        return True


def test_a_failure_while_taking_puts_the_tasks_back_through_requeue_in_order() -> None:
    batching = Batching()
    batching.learn(BODY.digest, 1e-6)
    fair = FairQueue()
    lane: deque[Task] = deque()
    fair.extend(lane, [Task(1), Task(2, fails=True), Task(3)])  # type: ignore[list-item]
    with pytest.raises(Broken):
        take_batch(fair, 100, batching)
    assert [fair.popleft().wire.job_id for _ in range(len(fair))] == [1, 2, 3]
