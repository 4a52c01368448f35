"""A job's future semantics under concurrency: what the light Job (one shared lock, no condition of its own
until someone waits, whole result frames completed at once) must keep from concurrent.futures.Future."""

from __future__ import annotations

import asyncio
import concurrent.futures as cf
import threading
import time
from collections.abc import Callable, Iterator

import pytest

import ppft_client


def add_one(x):
    return x + 1


def nap(x):
    import time

    time.sleep(x)
    return x


def fails(x):
    raise ValueError(f"bad {x}")


@pytest.fixture
def server_of() -> Iterator[Callable[[int], ppft_client.Server]]:
    servers: list[ppft_client.Server] = []

    def make(n: int) -> ppft_client.Server:
        server = ppft_client.Server(n)
        servers.append(server)
        return server

    yield make
    for server in servers:
        server.destroy()


def test_submits_from_many_threads_each_complete_exactly_once(server_of):
    server = server_of(2)
    results: dict[int, list[object]] = {}
    errors: list[BaseException] = []

    def submitter(base: int) -> None:
        try:
            jobs = [server.submit(add_one, (base + i,), group=f"g{base}") for i in range(2000)]
            results[base] = [job.result(timeout=60) for job in jobs]
        except BaseException as exc:  # noqa: BLE001 - reported by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=submitter, args=(k * 10_000,)) for k in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(90)
    assert not errors and not any(thread.is_alive() for thread in threads)
    for base, values in results.items():
        assert values == [base + i + 1 for i in range(2000)]
    server.wait()
    assert server._scheduler.unfinished() == 0
    assert server.get_stats()["local"].njobs >= 12_000


def test_many_threads_waiting_on_one_job_all_wake(server_of):
    server = server_of(1)
    job = server.submit(nap, (0.3,))
    got: list[object] = []
    threads = [threading.Thread(target=lambda: got.append(job.result(timeout=30))) for _ in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert got == [0.3] * 16


def test_timed_out_waits_leave_no_sleeper_and_later_waits_succeed(server_of):
    server = server_of(1)
    job = server.submit(nap, (0.4,))
    for _ in range(5):
        with pytest.raises(cf.TimeoutError):
            job.result(timeout=0.01)
    assert job.result(timeout=30) == 0.4
    assert not job._condition  # every sleeper was removed or woken


def test_as_completed_sees_every_job_once_while_they_complete(server_of):
    server = server_of(2)
    jobs = [server.submit(add_one, (i,)) for i in range(5000)]
    seen = [job.result() for job in cf.as_completed(jobs, timeout=60)]
    assert sorted(seen) == list(range(1, 5001))


def test_wait_first_completed_returns_the_quick_job(server_of):
    server = server_of(2)
    slow = server.submit(nap, (5,))
    quick = server.submit(add_one, (1,))
    done, not_done = cf.wait([slow, quick], timeout=30, return_when=cf.FIRST_COMPLETED)
    assert quick in done and slow in not_done


def test_cancel_racing_dispatch_gives_each_job_one_fate(server_of):
    server = server_of(2)
    jobs = [server.submit(add_one, (i,)) for i in range(20_000)]
    cancelled = {id(job) for job in jobs[::3] if job.cancel()}
    server.wait()
    for i, job in enumerate(jobs):
        assert job.done()
        if id(job) in cancelled:
            assert job.cancelled()
            with pytest.raises(cf.CancelledError):
                job.result(timeout=1)
        else:
            assert not job.cancelled() and job.result(timeout=1) == i + 1
    assert server._scheduler.unfinished() == 0


def test_cancelled_job_in_as_completed_is_reported(server_of):
    server = server_of(1)
    blocker = server.submit(nap, (0.5,))
    queued = server.submit(add_one, (1,))
    assert queued.cancel()
    done = list(cf.as_completed([blocker, queued], timeout=30))
    assert set(done) == {blocker, queued}


def test_done_callbacks_run_once_before_and_after_completion(server_of):
    server = server_of(1)
    calls: list[tuple[str, int]] = []
    lock = threading.Lock()

    def record(tag: str) -> Callable[[cf.Future], None]:  # type: ignore[type-arg]
        def callback(job: cf.Future) -> None:  # type: ignore[type-arg]
            with lock:
                calls.append((tag, job.result()))

        return callback

    job = server.submit(nap, (0.2,))
    job.add_done_callback(record("before"))
    assert job.result(timeout=30) == 0.2
    job.add_done_callback(record("after"))  # runs at once, on this thread
    deadline = time.monotonic() + 10
    while len(calls) < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert sorted(calls) == [("after", 0.2), ("before", 0.2)]


def test_exception_and_value_are_each_retrieved_identically_by_many_threads(server_of):
    server = server_of(2)
    bad = server.submit(fails, (3,))
    good = server.submit(list, ((1, 2),))
    values = []
    excs = []

    def grab() -> None:
        values.append(good.result(timeout=30))
        excs.append(bad.exception(timeout=30))

    threads = [threading.Thread(target=grab) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert all(value is values[0] for value in values) and values[0] == [1, 2]
    assert all(exc is excs[0] for exc in excs) and isinstance(excs[0], ValueError)


def test_asyncio_gathers_thousands_of_jobs(server_of):
    server = server_of(2)

    async def main() -> list[int]:
        futures = [asyncio.wrap_future(server.submit(add_one, (i,))) for i in range(3000)]
        return await asyncio.wait_for(asyncio.gather(*futures), 60)

    assert asyncio.run(main()) == list(range(1, 3001))


def test_executor_map_closed_early_cancels_the_rest():
    with ppft_client.Executor(1) as ex:
        results = ex.map(nap, [0.2] + [0.0] * 200)
        assert next(results) == 0.2
        results.close()  # the rest is cancelled where it has not started
        ex.server.wait()
    assert ex.server._scheduler.unfinished() == 0


def test_executor_map_timeout_raises_and_cancels():
    ex = ppft_client.Executor(1)
    try:
        results = ex.map(nap, [2.0, 0.0, 0.0], timeout=0.2)
        with pytest.raises(cf.TimeoutError):
            list(results)
    finally:
        ex.shutdown(wait=True, cancel_futures=True)


def test_server_wait_counts_groups_while_others_submit(server_of):
    server = server_of(2)
    stop = threading.Event()

    def keep_submitting() -> None:
        while not stop.is_set():
            server.submit(add_one, (0,), group="other").result(timeout=30)

    thread = threading.Thread(target=keep_submitting)
    thread.start()
    try:
        jobs = [server.submit(nap, (0.01,), group="mine") for _ in range(20)]
        server.wait("mine")
        assert all(job.done() for job in jobs)
    finally:
        stop.set()
        thread.join(30)
