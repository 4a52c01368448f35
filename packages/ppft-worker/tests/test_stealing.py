"""Work stealing: an idle local worker takes back the tail of a frame running long on another.

The decisions (`ppft_worker.pool.stealing`) are tested on plain objects; then a real `WorkerPool` with two
exec'd workers runs 16 long jobs that the batching, having learnt the function as tiny, sends to one worker
in one frame: both workers must run some, and every job must complete exactly once.
"""

from __future__ import annotations

import collections
import itertools
import pickle
import time
from collections.abc import Callable, Iterator
from types import SimpleNamespace
from typing import Any

import pytest

from ppft_protocol import FunctionBody, Job, Result, function_digest
from ppft_worker.pool import WorkerPool
from ppft_worker.pool.stealing import STEAL_AFTER, plan_steals, reclaim, seconds_to_next_check
from ppft_worker.runtime.loop import Loop
from ppft_worker.runtime.tasks import CANCELLED_TYPE

TIMEOUT = 30.0
SPIN = """def spin(n):
    import os
    t = 0
    for i in range(n):
        t += i * i
    return os.getpid()
"""


class T:
    def __init__(self, job_id: int, fn: FunctionBody, args: tuple[Any, ...], solo: bool = False) -> None:
        self.wire = Job(job_id, fn.digest, pickle.dumps(args))
        self.body = fn
        self.attempts = 0
        self.solo = solo

    def claim(self) -> bool:
        return True


FN = FunctionBody(function_digest("spin", (SPIN,), (), b""), "spin", (SPIN,))
GATED = """def gated(gate):
    import os, time
    deadline = time.monotonic() + 30
    while not os.path.exists(gate) and time.monotonic() < deadline:
        time.sleep(0.005)
    return os.getpid()
"""
GATED_FN = FunctionBody(function_digest("gated", (GATED,), (), b""), "gated", (GATED,))


def worker(n: int = 0, *, since: float = 0.0, first_id: int = 1, **kw: Any) -> SimpleNamespace:
    attrs = {
        "ready": True, "retiring": False, "solo_busy": False, "stolen": set(), "since": since,
        "standing_by": False,
    }  # fmt: skip
    attrs.update(kw)
    inflight = {i: T(i, FN, (1,)) for i in range(first_id, first_id + n)}
    return SimpleNamespace(inflight=inflight, **attrs)


# -- the decisions -------------------------------------------------------------------------------------


def test_idle_worker_robs_the_tail_half_of_a_long_running_frame() -> None:
    busy = worker(16)
    assert plan_steals([busy, worker()], now=1.0) == [(busy, tuple(range(9, 17)))]


def test_no_steal_before_the_threshold() -> None:
    assert plan_steals([worker(16, since=1.0), worker()], now=1.0 + STEAL_AFTER / 2) == []


def test_no_steal_without_an_idle_worker() -> None:
    assert plan_steals([worker(16), worker(1, first_id=100)], now=1.0) == []


def test_the_worker_with_most_jobs_in_flight_is_robbed() -> None:
    small, big = worker(4), worker(10, first_id=100)
    assert plan_steals([small, big, worker()], now=1.0) == [(big, (105, 106, 107, 108, 109))]


def test_a_retiring_or_solo_busy_or_single_job_worker_is_never_robbed() -> None:
    for victim in (worker(16, retiring=True), worker(16, solo_busy=True), worker(1)):
        assert plan_steals([victim, worker()], now=1.0) == []


def test_a_retiring_or_starting_worker_does_not_count_as_idle() -> None:
    for thief in (worker(retiring=True), worker(ready=False)):
        assert plan_steals([worker(16), thief], now=1.0) == []


def test_a_recycled_workers_replacement_standing_by_does_not_count_as_idle() -> None:
    assert plan_steals([worker(16), worker(standing_by=True)], now=1.0) == []


def test_no_second_steal_from_a_worker_while_one_is_pending() -> None:
    assert plan_steals([worker(16, stolen={12}), worker()], now=1.0) == []


def test_a_solo_job_is_never_stolen() -> None:
    busy = worker(4)
    busy.inflight[4].solo = True
    assert plan_steals([busy, worker()], now=1.0) == [(busy, (3,))]


def test_next_check_waits_for_the_threshold_and_stops_when_nothing_can_be_robbed() -> None:
    assert seconds_to_next_check([worker(16, since=1.0), worker()], now=1.0) == pytest.approx(STEAL_AFTER)
    assert seconds_to_next_check([worker(1), worker()], now=1.0) is None
    assert seconds_to_next_check([worker(16), worker(1, first_id=100)], now=1.0) is None


def test_reclaim_requeues_cancelled_stolen_jobs_and_lets_started_ones_complete() -> None:
    busy = worker(4, stolen={3, 4})
    cancelled = Result(4, False, error_type=CANCELLED_TYPE, error_message="cancelled before it started")
    back = reclaim(busy, [Result(2, True), Result(3, True), cancelled])
    assert [t.wire.job_id for t in back] == [4]
    assert sorted(busy.inflight) == [1, 2, 3]  # 2 and 3 complete normally through collect_results
    assert busy.stolen == set()


# -- a real pool ---------------------------------------------------------------------------------------


class Harness:
    def __init__(self, size: int) -> None:
        self.loop = Loop()
        self.queue: collections.deque[T] = collections.deque()
        self.results: dict[int, list[Result]] = collections.defaultdict(list)
        self.ids = itertools.count(1)
        self.pool = WorkerPool(self.loop, size, on_results=self.done, on_requeue=self.requeue)
        self.loop.on_idle = lambda: self.pool.dispatch(self.queue)

    def done(self, pairs: list[tuple[T, Result]]) -> None:
        for task, result in pairs:
            self.results[task.wire.job_id].append(result)

    def requeue(self, tasks: list[T]) -> None:
        self.queue.extendleft(reversed(tasks))

    def until(self, predicate: Callable[[], bool], what: str) -> None:
        deadline = time.monotonic() + TIMEOUT
        while not predicate():
            assert time.monotonic() < deadline, f"timed out waiting for {what}"
            self.loop.run_once(0.05)

    def run(self, args_list: list[tuple[Any, ...]]) -> list[Any]:
        """Each job's value; asserts each job got exactly one result, and an ok one."""
        tasks = [T(next(self.ids), FN, args) for args in args_list]
        self.queue.extend(tasks)
        self.until(lambda: all(t.wire.job_id in self.results for t in tasks), "results")
        self.loop.run_once(0.05)  # a duplicate result would arrive here
        out = []
        for t in tasks:
            (r,) = self.results[t.wire.job_id]
            assert r.ok, f"{r.error_type}: {r.error_message}"
            out.append(pickle.loads(r.value))
        return out


@pytest.fixture
def harness() -> Iterator[Harness]:
    h = Harness(2)
    try:
        h.pool.start()
        h.until(lambda: all(w.ready for w in h.pool._workers) and len(h.pool._workers) == 2, "workers")
        yield h
    finally:
        h.pool.close()  # kills every worker by pid, even when the test failed
        h.loop.close()


def test_long_jobs_batched_onto_one_worker_are_spread_over_both(harness: Harness) -> None:
    harness.run([(10,)])  # the batching learns: spin is tiny
    pids = harness.run([(1_000_000,)] * 16)  # ~30 ms each: one frame of 16 for one worker
    assert len(set(pids)) == 2
    assert len(pids) == 16


def test_jobs_of_mixed_lengths_complete_exactly_once_despite_steals(harness: Harness) -> None:
    harness.run([(10,)])
    lengths = [(n,) for n in itertools.islice(itertools.cycle([50_000, 700_000, 10, 300_000, 2_000]), 60)]
    for _ in range(3):
        pids = harness.run(lengths)  # `run` asserts one ok result per job
        assert len(pids) == 60
        harness.run([(10,)] * 300)  # back to tiny, so the next round is batched onto one worker again


def test_a_worker_that_becomes_ready_after_a_long_frame_went_out_takes_its_tail(tmp_path: Any) -> None:
    """The frame went to the one worker ready then (the other was still starting, here: not yet asked
    for): the worker that joins later finds nothing queued and takes back the frame's tail."""
    h = Harness(1)
    try:
        h.pool.start()
        h.until(lambda: len(h.pool._workers) == 1 and h.pool._workers[0].ready, "the first worker")
        for _ in range(60):  # as if it had seen many of them: gated jobs are tiny, 16 go out in one frame
            h.pool._batching.learn(GATED_FN.digest, 1e-6)  # (a real tiny job can look long on a busy machine)
        gate = tmp_path / "gate"
        # the frame's first job holds its worker until the gate opens, however slowly the other one starts
        tasks = [T(next(h.ids), GATED_FN, (str(gate),)) for _ in range(16)]
        h.queue.extend(tasks)
        h.until(lambda: not h.queue, "the frame of 16 to go out")
        h.pool.resize(2)
        first = h.pool._workers[0]
        h.until(lambda: bool(first.stolen), "the second worker, ready, to claim the frame's tail")
        open(gate, "w").close()  # the first worker ends its job, then gives the tail up
        h.until(lambda: all(t.wire.job_id in h.results for t in tasks), "results")
        h.loop.run_once(0.05)  # a duplicate result would arrive here
        pids = set()
        for t in tasks:
            (r,) = h.results[t.wire.job_id]
            assert r.ok, f"{r.error_type}: {r.error_message}"
            pids.add(pickle.loads(r.value))
        assert len(pids) == 2
    finally:
        h.pool.close()
        h.loop.close()
