"""Jobs wait on a real `threading.Condition` over the jobs' lock where `RLock` lacks the private methods
`Sleepers` needs (ppft_protocol.cpython.rlock_condition_hooks): results, timeouts, wait and as_completed."""

from __future__ import annotations

import concurrent.futures
import threading
import time

import pytest

from ppft_client import joblock


def nap(seconds):
    import time

    time.sleep(seconds)
    return seconds


@pytest.fixture
def without_rlock_hooks(monkeypatch):
    monkeypatch.setattr(joblock, "_HOOKS", None)


def test_jobs_wait_on_a_real_condition_without_the_rlock_hooks(without_rlock_hooks, make_server):
    server = make_server(2)
    slow = server.submit(nap, (0.3,))
    with pytest.raises(concurrent.futures.TimeoutError):
        slow.result(timeout=0.01)
    assert isinstance(slow._condition, type(threading.Condition()))
    jobs = [server.submit(nap, (i / 20,)) for i in range(4)]
    done, _ = concurrent.futures.wait([slow, *jobs], timeout=30)
    assert len(done) == 5
    results = sorted(j.result() for j in concurrent.futures.as_completed(jobs, timeout=30))
    assert results == [i / 20 for i in range(4)]
    assert slow.result(timeout=30) == 0.3


def test_a_thread_waiting_on_a_job_is_woken_without_the_rlock_hooks(without_rlock_hooks, make_server):
    server = make_server(1)
    job = server.submit(nap, (0.2,))
    got: list[float] = []
    waiter = threading.Thread(target=lambda: got.append(job.result(timeout=30)))
    waiter.start()
    start = time.monotonic()
    waiter.join(30)
    assert got == [0.2] and time.monotonic() - start < 20
