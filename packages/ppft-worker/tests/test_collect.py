"""Jobs in from a peer (take_jobs) and results back (collect_results, collect_raw_results): tasks renumbered,
results matched to the tasks still in flight, run times learned."""

from __future__ import annotations

import itertools

import pytest

from ppft_protocol import FunctionBody, Job, JobBatch, Message, Result, ResultBatch, function_digest
from ppft_protocol.messages import encode_message
from ppft_protocol.relay import RawResults, decode_raw_results
from ppft_worker.runtime.batching import Batching
from ppft_worker.runtime.intake import BodyTable, ServedTask, take_jobs
from ppft_worker.runtime.tasks import Task, collect_raw_results, collect_results


def body_of(name: str) -> FunctionBody:
    sources = (f"def {name}():\n    pass\n",)
    return FunctionBody(function_digest(name, sources, (), b""), name, sources)


TINY = body_of("tiny")
OTHER = body_of("other")


def table(*bodies: FunctionBody) -> BodyTable:
    kept = BodyTable("a test peer")
    for body in bodies:
        assert kept.add(body, 2) is None
    return kept


class Owner:
    def __init__(self) -> None:
        self.closed = False
        self.sent: list[Message] = []

    def send(self, message: Message) -> None:
        self.sent.append(message)


def served(owner: Owner, *bodies: FunctionBody) -> list[ServedTask]:
    """One task per body, with our ids 100, 101, ... and client ids 1, 2, ..."""
    return [
        ServedTask(Job(100 + i, body.digest, b"args", 5), body, owner, 1 + i) for i, body in enumerate(bodies)
    ]


def raw(results: list[Result]) -> RawResults:
    return decode_raw_results(memoryview(b"".join(encode_message(ResultBatch(tuple(results))))))


def test_jobs_are_renumbered_and_keep_the_peers_ids() -> None:
    batch = JobBatch(tuple(Job(7 + i, bytes(TINY.digest), b"a%d" % i, 4) for i in range(3)))
    tasks, unknown = take_jobs(table(TINY), batch, itertools.count(50), Owner())
    assert unknown == []
    assert [t.wire for t in tasks] == [Job(50 + i, TINY.digest, b"a%d" % i, 4) for i in range(3)]
    assert [t.client_id for t in tasks] == [7, 8, 9]


def test_tasks_of_one_function_share_its_body_and_digest_object() -> None:
    batch = JobBatch(tuple(Job(i, bytes(TINY.digest), b"", 5) for i in range(4)))  # a digest object per job
    tasks, _ = take_jobs(table(TINY), batch, itertools.count(), Owner())
    assert all(t.body is TINY and t.wire.digest is TINY.digest for t in tasks)


def test_jobs_of_an_unknown_function_are_answered_and_not_queued() -> None:
    batch = JobBatch((Job(1, TINY.digest, b""), Job(2, OTHER.digest, b""), Job(3, TINY.digest, b"")))
    tasks, unknown = take_jobs(table(TINY), batch, itertools.count(), Owner())
    assert [t.client_id for t in tasks] == [1, 3]
    assert [(r.job_id, r.ok, r.error_type) for r in unknown] == [
        (2, False, "ppft_protocol.errors.RemoteProtocolError")
    ]


def test_claim_all_keeps_the_tasks_whose_owner_is_still_there() -> None:
    gone = Owner()
    gone.closed = True
    here = served(Owner(), TINY, TINY)
    tasks = [here[0], *served(gone, TINY), here[1]]
    assert ServedTask.claim_all(tasks) == here


@pytest.mark.parametrize("undecoded", [False, True], ids=["decoded", "raw"])
def test_results_of_tasks_no_longer_in_flight_are_dropped(undecoded: bool) -> None:
    tasks = served(Owner(), TINY, TINY, TINY)
    inflight: dict[int, Task] = {100: tasks[0], 102: tasks[2]}
    results = [Result(100 + i, True, b"v", "", 0.5 + i, 0.0) for i in range(3)]
    batching = Batching()
    if undecoded:
        found, done, total = collect_raw_results(raw(results), inflight.pop, batching)
        assert (found, done) == ([tasks[0], None, tasks[2]], 2)
    else:
        pairs, total = collect_results(ResultBatch(tuple(results)), inflight.pop, batching)
        assert pairs == [(tasks[0], results[0]), (tasks[2], results[2])]
    assert total == 0.5 + 2.5
    assert inflight == {}


@pytest.mark.parametrize("undecoded", [False, True], ids=["decoded", "raw"])
def test_run_times_are_learned_per_function(undecoded: bool) -> None:
    tasks = served(Owner(), TINY, OTHER, TINY)
    inflight: dict[int, Task] = {t.wire.job_id: t for t in tasks}
    results = [
        Result(100, True, b"", "", 1e-4),
        Result(101, True, b"", "", 1.0),
        Result(102, True, b"", "", 3e-4),
    ]
    batching = Batching()
    if undecoded:
        collect_raw_results(raw(results), inflight.pop, batching)
    else:
        collect_results(ResultBatch(tuple(results)), inflight.pop, batching)
    assert batching.limits(TINY.digest) == (10, 20)  # 2 ms of 0.2 ms jobs per frame
    assert batching.limits(OTHER.digest) == (1, 1)  # a long job goes alone
