"""A callback that raises anything, SystemExit included, is logged naming its job, and every later callback
still runs: classic `callback=` and `add_done_callback` alike, on real workers."""

from __future__ import annotations

import logging
import threading

import pytest

RAISED = [SystemExit(3), KeyboardInterrupt(), GeneratorExit(), ValueError("broken callback")]
IDS = [type(exc).__name__ for exc in RAISED]


def square(x):
    return x * x


def callback_records(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "ppft.callbacks"]


@pytest.mark.parametrize("raised", RAISED, ids=IDS)
def test_a_classic_callback_that_raises_does_not_stop_later_callbacks(make_server, caplog, raised):
    server = make_server(1)
    got: list[int] = []

    def callback(value):
        if value == 0:
            raise raised
        got.append(value)

    for x in range(6):
        server.submit(square, (x,), callback=callback)
    assert server._scheduler.wait(timeout=30)  # a job's classic callback has run before wait() returns for it
    assert sorted(got) == [1, 4, 9, 16, 25]
    records = callback_records(caplog)
    assert len(records) == 1
    message = records[0].getMessage()
    assert message.startswith("callback test_a_classic_callback_that_raises_does_not_stop_later_callbacks.")
    assert f"of job 0 raised {type(raised).__name__}" in message
    assert records[0].exc_info is not None and records[0].exc_info[1] is raised  # with its traceback


@pytest.mark.parametrize("raised", RAISED, ids=IDS)
def test_a_done_callback_that_raises_does_not_stop_later_callbacks(make_server, caplog, raised):
    server = make_server(1)
    got: list[int] = []
    everything = threading.Event()

    def first(job):
        if job.tid == 0:
            raise raised

    def second(job):
        got.append(job.result())
        if len(got) == 6:
            everything.set()

    jobs = [server.submit(square, (x,)) for x in range(6)]
    for job in jobs:
        job.add_done_callback(first)  # each job has two: the second one of job 0 runs too
        job.add_done_callback(second)
    assert everything.wait(30)
    assert sorted(got) == [0, 1, 4, 9, 16, 25]
    records = callback_records(caplog)
    assert len(records) == 1
    assert f"of job 0 raised {type(raised).__name__}" in records[0].getMessage()
    assert records[0].exc_info is not None and records[0].exc_info[1] is raised


def test_wait_returns_for_a_job_whose_callback_raised(make_server):
    server = make_server(1)

    def callback(value):
        raise SystemExit(1)

    server.submit(square, (2,), callback=callback)
    assert server._scheduler.wait(timeout=30)  # counted as finished though its callback raised


def test_a_finalize_override_that_raises_is_logged_and_the_job_finishes(make_server, caplog):
    import ppft_client

    class Task(ppft_client.Job):
        def finalize(self, sresult):
            raise SystemExit("finalize failed")

    server = make_server(1)
    task = Task(server, 1000)
    server.insert(server.submit(square, (3,)).body, __import__("pickle").dumps((3,)), task)
    assert task.wait(30)
    assert task.result(timeout=5) == 9
    records = callback_records(caplog)  # logged before the job finished
    assert len(records) == 1 and "Task.finalize of job 1000 raised SystemExit" in records[0].getMessage()
