"""A job is a concurrent.futures.Future; Executor is a concurrent.futures.Executor."""

from __future__ import annotations

import asyncio
import concurrent.futures as cf
import threading

import pytest

import ppft_client


def add_one(x):
    return x + 1


def power(x, exponent=2):
    return x**exponent


def slow(x):
    import time

    time.sleep(0.5)
    return x


def divide(a, b):
    return a / b


def test_as_completed_and_wait(make_server):
    server = make_server(2)
    jobs = [server.submit(add_one, (i,)) for i in range(100)]
    assert sorted(f.result() for f in cf.as_completed(jobs, timeout=60)) == list(range(1, 101))
    done, not_done = cf.wait(jobs, timeout=60)
    assert len(done) == 100 and not not_done


def test_wait_first_exception_sees_a_failed_job(make_server):
    server = make_server(1)
    bad = server.submit(divide, (1, 0))
    done, _ = cf.wait([bad, server.submit(slow, (1,))], timeout=60, return_when=cf.FIRST_EXCEPTION)
    assert bad in done


def test_asyncio_wrap_future(make_server):
    server = make_server(2)

    async def main():
        futures = [asyncio.wrap_future(server.submit(add_one, (i,))) for i in range(20)]
        return await asyncio.wait_for(asyncio.gather(*futures), 60)

    assert asyncio.run(main()) == list(range(1, 21))


def test_result_timeout(make_server):
    server = make_server(1)
    job = server.submit(slow, (1,))
    with pytest.raises(cf.TimeoutError):
        job.result(timeout=0.01)
    assert job.result(timeout=30) == 1


def test_cancel_while_queued(make_server):
    server = make_server(1)
    first = server.submit(slow, (1,))
    queued = [server.submit(add_one, (i,)) for i in range(5)]
    cancelled = [job for job in queued if job.cancel()]
    assert first.result(timeout=30) == 1
    server.wait()  # cancelled jobs do not keep wait() waiting
    for job in cancelled:
        assert job.cancelled()
        with pytest.raises(cf.CancelledError):
            job.result(timeout=1)


def test_done_callbacks_run_off_the_io_thread(make_server):
    server = make_server(1)
    seen = []
    event = threading.Event()

    def on_done(future):
        seen.append((threading.current_thread().name, future.result()))
        event.set()

    server.submit(add_one, (1,)).add_done_callback(on_done)
    assert event.wait(30)
    assert seen[0][1] == 2 and seen[0][0] != "ppft-io"


def test_server_is_a_context_manager():
    with ppft_client.Server(1) as server:
        assert server.submit(add_one, (1,))() == 2
    assert server._exiting


def test_executor_submit_map_kwargs_and_shutdown():
    with ppft_client.Executor(2) as ex:
        assert ex.submit(add_one, 1).result(timeout=30) == 2
        assert ex.submit(power, 3, exponent=3).result(timeout=30) == 27
        assert list(ex.map(power, range(1000), chunksize=50)) == [x * x for x in range(1000)]
        assert list(ex.map(power, [2, 3], [3, 2], timeout=30)) == [8, 9]
    with pytest.raises(RuntimeError, match="after shutdown"):
        ex.submit(add_one, 1)


def test_executor_shutdown_cancel_futures():
    ex = ppft_client.Executor(1)
    first = ex.submit(slow, 1)
    rest = [ex.submit(add_one, i) for i in range(20)]
    ex.shutdown(wait=True, cancel_futures=True)
    assert first.done()
    assert all(job.done() for job in rest)
    assert any(job.cancelled() for job in rest)
