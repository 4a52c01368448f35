"""A job that a thread has seen finished is counted in what that thread reads next: `print_stats`'s active
tasks, `unfinished()` and `status()`'s outcomes. The I/O thread (and the callback thread, for a job with a
classic callback) finishes jobs and counts them in one hold of the scheduler's `done_lock`, which the readers
take; here the counting is made slow, so that a reader that did not wait for it would see the job finished
and not yet counted."""

from __future__ import annotations

import io
import time
from contextlib import redirect_stdout
from typing import Any

import pytest

from ppft_client import scheduler as scheduler_module


def add_one(x: int) -> int:
    return x + 1


def fails(x: int) -> int:
    raise ValueError(f"bad {x}")


@pytest.fixture
def slow_counting(monkeypatch: pytest.MonkeyPatch) -> None:
    """The finishing thread counts each job 0.3 s after it finished it (a fault injected to widen the
    window a loaded machine leaves open by chance; nothing waits on this sleep)."""
    real = scheduler_module.count_finished

    def slow(*args: Any) -> None:
        time.sleep(0.3)
        real(*args)

    monkeypatch.setattr(scheduler_module, "count_finished", slow)


def _seen_done(job: Any) -> None:
    """Poll until `job` is done, as a caller that never sleeps on it does (no wake-up by the I/O thread)."""
    deadline = time.monotonic() + 30
    while not job.done():
        assert time.monotonic() < deadline, "the job did not finish"
        time.sleep(0.001)


@pytest.mark.usefixtures("slow_counting")
def test_a_job_seen_done_is_counted(make_server: Any) -> None:
    server = make_server(1)
    job = server.submit(add_one, (1,))
    _seen_done(job)
    assert server._scheduler.unfinished() == 0
    assert server.status()["jobs"]["ok"] == 1
    bad = server.submit(fails, (2,))
    _seen_done(bad)
    assert server.status()["jobs"]["error"] == 1
    out = io.StringIO()
    with redirect_stdout(out):
        server.print_stats()
    assert "0 active tasks" in out.getvalue()


@pytest.mark.usefixtures("slow_counting")
def test_a_job_whose_classic_callback_ran_is_counted(make_server: Any) -> None:
    server = make_server(1)
    got: list[int] = []
    job = server.submit(add_one, (1,), callback=got.append)
    assert job.result(timeout=30) == 2  # woken by the callback thread, which counts it after
    assert got == [2]
    assert server._scheduler.unfinished() == 0
    assert server.status()["jobs"]["ok"] == 1
