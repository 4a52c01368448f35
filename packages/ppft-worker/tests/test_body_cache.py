"""What a worker keeps of the function bodies it is sent: only genuine ones (checked against their digest),
and on a version-2 link only as many as the budget the sender counts too, never one a queued job needs."""

from __future__ import annotations

import itertools
import pickle

from ppft_protocol import BodyLedger, FunctionBody, Job, JobBatch, function_digest
from ppft_protocol.bodies import body_cost
from ppft_worker.process.execute import JobRunner
from ppft_worker.runtime.intake import BodyTable, ServedTask, take_jobs


def body(name: str, source: str) -> FunctionBody:
    return FunctionBody(function_digest(name, (source,), (), b""), name, (source,))


def counter(name: str, pad: int = 0) -> FunctionBody:
    """A function that counts its calls in its own namespace: a rebuilt namespace starts again at 1."""
    source = f"def {name}():\n    global calls\n    calls = globals().get('calls', 0) + 1\n    return calls\n"
    return body(name, source + "#" * pad + "\n")


def run(runner: JobRunner, digest: bytes, *args: object, job_id: int = 1) -> object:
    result = runner.run(Job(job_id, digest, pickle.dumps(args)))
    assert result.ok, result.error_message
    return pickle.loads(result.value)


def failure(runner: JobRunner, digest: bytes) -> str:
    result = runner.run(Job(9, digest, pickle.dumps(())))
    assert not result.ok
    assert result.error_type == "ppft_worker.errors.JobSetupError"
    return result.error_message


# -- digests ------------------------------------------------------------------------------------------------


def test_a_body_whose_digest_does_not_match_is_refused_and_its_jobs_say_why(caplog) -> None:  # type: ignore[no-untyped-def]
    genuine = body("f", "def f():\n    return 'genuine'\n")
    forged = FunctionBody(genuine.digest, "f", ("def f():\n    return 'evil'\n",))
    runner = JobRunner()
    runner.add_body(forged)
    message = failure(runner, genuine.digest)
    assert "digest does not match its content" in message and genuine.digest.hex()[:16] in message
    assert "refused" in caplog.text


def test_a_forged_body_never_replaces_the_genuine_one() -> None:
    genuine = body("f", "def f():\n    return 'genuine'\n")
    runner = JobRunner()
    runner.add_body(genuine)
    runner.add_body(FunctionBody(genuine.digest, "f", ("def f():\n    return 'evil'\n",)))
    assert run(runner, genuine.digest) == "genuine"


def test_the_genuine_body_sent_after_a_forged_one_runs() -> None:
    genuine = body("f", "def f():\n    return 'genuine'\n")
    runner = JobRunner()
    runner.add_body(FunctionBody(genuine.digest, "f", ("def f():\n    return 'evil'\n",)))
    runner.add_body(genuine)
    assert run(runner, genuine.digest) == "genuine"


def test_a_peer_body_table_refuses_a_forged_body_and_fails_its_jobs_as_setup_errors() -> None:
    genuine = body("f", "def f():\n    return 1\n")
    table = BodyTable("client 127.0.0.1:1")
    assert table.add(FunctionBody(genuine.digest, "f", ("def f():\n    return 2\n",)), 2) is not None
    assert table.get(genuine.digest) is None
    tasks, unknown = take_jobs(table, JobBatch((Job(4, genuine.digest, b""),)), itertools.count(), _Owner())
    assert tasks == []
    (result,) = unknown
    assert (result.job_id, result.ok, result.error_type) == (4, False, "ppft_worker.errors.JobSetupError")
    assert "digest does not match its content" in result.error_message
    assert type(pickle.loads(result.exception)).__name__ == "JobSetupError"
    assert table.add(genuine, 2) is None
    tasks, unknown = take_jobs(table, JobBatch((Job(5, genuine.digest, b""),)), itertools.count(), _Owner())
    assert unknown == [] and [t.body for t in tasks] == [genuine]


class _Owner:
    closed = False

    def send(self, message: object) -> None:
        pass


# -- the budget ----------------------------------------------------------------------------------------------


def test_without_a_budget_every_body_stays() -> None:
    runner = JobRunner()
    for i in range(50):
        b = counter(f"f{i}", 1000)
        runner.add_body(b)
        assert run(runner, b.digest) == 1
    assert runner.kept == 50 and not runner.doomed


def test_with_a_budget_the_runner_forgets_what_the_senders_ledger_forgets() -> None:
    bodies = [counter(f"f{i}", 1000) for i in range(20)]
    budget = 5 * body_cost(bodies[-1])  # the longest name: five of any fit
    runner, ledger = JobRunner(budget), BodyLedger(budget)
    for b in bodies:
        if b.digest not in ledger:
            ledger.add(b)
            runner.add_body(b)
        runner.release(set())  # nothing queued
        assert run(runner, b.digest) == 1
    assert runner.kept == 5
    for b in bodies[-5:]:  # the five newest are held: their namespaces kept their state
        assert b.digest in ledger
        assert run(runner, b.digest) == 2
    first = bodies[0]
    assert first.digest not in ledger  # forgotten on both sides: the sender sends it again
    ledger.add(first)
    runner.add_body(first)
    runner.release(set())
    assert run(runner, first.digest) == 1  # a fresh namespace


def test_a_forgotten_body_stays_while_a_queued_job_needs_it() -> None:
    old, new = counter("old", 3000), counter("new", 3000)
    runner = JobRunner(body_cost(old))  # room for one
    runner.add_body(old)
    runner.add_body(new)  # the ledger forgets `old`, but a job of it is still queued
    assert runner.doomed
    runner.release({old.digest})
    assert run(runner, old.digest) == 1
    runner.release(set())
    assert not runner.doomed and runner.kept == 1
    assert "unknown to this worker" in failure(runner, old.digest)


def test_a_forgotten_body_sent_again_is_kept_again() -> None:
    a, b = counter("a", 3000), counter("b", 3000)
    runner = JobRunner(body_cost(a))
    runner.add_body(a)
    runner.add_body(b)
    runner.add_body(a)  # sent again before the release: it is the newest now, not forgotten
    runner.release(set())
    assert run(runner, a.digest) == 1
    assert "unknown to this worker" in failure(runner, b.digest)


def test_many_distinct_functions_keep_the_runner_within_its_budget() -> None:
    budget = 200_000
    runner, ledger = JobRunner(budget), BodyLedger(budget)
    costs = []
    for i in range(2000):
        b = counter(f"g{i}", 500)
        ledger.add(b)
        runner.add_body(b)
        runner.release(set())
        assert run(runner, b.digest, job_id=i) == 1
        costs.append(body_cost(b))
    assert runner.kept == len(ledger) <= budget // min(costs) + 1


def test_served_task_keeps_its_body_after_the_table_forgets_it() -> None:
    a, b = counter("a", 3000), counter("b", 3000)
    table = BodyTable("client x")
    table._ledger.budget = body_cost(a)  # room for one
    table.add(a, 2)
    tasks, _ = take_jobs(table, JobBatch((Job(1, a.digest, b""),)), itertools.count(), _Owner())
    table.add(b, 2)
    assert table.get(a.digest) is None and len(table) == 1
    assert isinstance(tasks[0], ServedTask) and tasks[0].body is a


def test_a_version_1_peer_table_forgets_nothing() -> None:
    table = BodyTable("client x")
    table._ledger.budget = 1
    for i in range(10):
        table.add(counter(f"c{i}", 100), 1)
    assert len(table) == 10
