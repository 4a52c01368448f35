"""`wait(group)` counts jobs per group; a caller that uses a million distinct group names must not keep a
million counters once their jobs are done, and `wait` must stay exact while counters come and go."""

from __future__ import annotations

import threading
import time

import pytest

import ppft_client


def double(x):
    return 2 * x


@pytest.fixture
def server():  # type: ignore[no-untyped-def]
    s = ppft_client.Server(2, secret="group counters test")
    yield s
    s.destroy()


def test_counters_of_finished_groups_are_freed(server) -> None:  # type: ignore[no-untyped-def]
    jobs = [server.submit(double, (i,), group=f"group-{i}") for i in range(5000)]
    server.wait()
    assert [job() for job in jobs] == [2 * i for i in range(5000)]
    scheduler = server._scheduler
    assert len(scheduler._submitted) < 2048 and len(scheduler._finished_counts) < 2048
    for i in (0, 2500, 4999):
        assert scheduler.unfinished(f"group-{i}") == 0
        server.wait(f"group-{i}")  # a forgotten group has nothing pending: returns at once


def held(path):
    """Runs until the file at `path` exists."""
    import os
    import time

    while not os.path.exists(path):
        time.sleep(0.01)
    return path


def test_wait_on_one_group_stays_exact_while_other_groups_come_and_go(server, tmp_path) -> None:  # type: ignore[no-untyped-def]
    flag = str(tmp_path / "go")
    slow = server.submit(held, (flag,), group="kept")
    many = [server.submit(double, (i,), group=f"g{i}") for i in range(3000)]
    deadline = time.monotonic() + 60
    while sum(job.done() for job in many) < 2000:  # counters of finished groups are swept meanwhile
        assert time.monotonic() < deadline, "tiny jobs did not finish"
        time.sleep(0.01)
    scheduler = server._scheduler
    assert scheduler.unfinished("kept") == 1  # its counters survive every sweep
    assert len(scheduler._finished_counts) < 2048
    waited = threading.Event()
    waiter = threading.Thread(target=lambda: (server.wait("kept"), waited.set()))
    waiter.start()
    assert not waited.wait(0.2)
    open(flag, "w").close()
    waiter.join(60)
    assert waited.is_set() and slow() == flag
    server.wait()
    assert [job() for job in many] == [2 * i for i in range(3000)]


def test_many_threads_submitting_to_many_groups_all_finish(server) -> None:  # type: ignore[no-untyped-def]
    errors: list[BaseException] = []

    def submitter(k: int) -> None:
        try:
            jobs = [server.submit(double, (i,), group=f"t{k}-{i % 700}") for i in range(1500)]
            for i in range(700):
                server.wait(f"t{k}-{i}")
            assert all(job.done() for job in jobs)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=submitter, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors and not any(t.is_alive() for t in threads)
    server.wait()
    assert server._scheduler.unfinished() == 0
