"""Time limits and stopping running jobs on local workers: `submit(timeout=)`, `Server(job_timeout=)`,
`Template(timeout=)`, `Executor(job_timeout=)`, `job.terminate()`; real worker processes."""

from __future__ import annotations

import concurrent.futures
import os
import time

import pytest

import ppft_client
from ppft_client import Executor, JobTimeoutError, Template


def sleepy(seconds):
    import time

    time.sleep(seconds)
    return seconds


def marked(mark, seconds):
    import time

    open(mark, "w").close()
    time.sleep(seconds)
    return seconds


def pid_of_worker(_):
    import os

    return os.getpid()


def test_a_job_over_its_timeout_raises_job_timeout_error_and_its_worker_is_replaced(make_server, wait_until):
    server = make_server(1)
    before = server.submit(pid_of_worker, (0,))()
    start = time.monotonic()
    job = server.submit(sleepy, (30,), timeout=1)
    with pytest.raises(JobTimeoutError) as info:
        job()
    assert time.monotonic() - start < 2
    assert isinstance(info.value, TimeoutError)
    assert isinstance(info.value, ppft_client.errors.PPFTError)
    message = str(info.value)
    assert f"job {job.tid} (sleepy)" in message and "timeout of 1 s" in message and "local worker" in message
    start = time.monotonic()
    after = server.submit(pid_of_worker, (0,))()
    assert time.monotonic() - start < 1
    assert after != before  # the worker was replaced
    wait_until(lambda: not os.path.exists(f"/proc/{before}") or _zombie(before), 5, "the old worker gone")


def _zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] in ("Z", "X")
    except FileNotFoundError:
        return True


def test_the_time_in_the_queue_does_not_count(make_server):
    server = make_server(1)
    first = server.submit(sleepy, (1.0,))
    queued = server.submit(sleepy, (0.2,), timeout=0.8)  # waits ~1 s behind `first`, runs 0.2 s
    assert first() == 1.0
    assert queued() == 0.2


def test_a_timed_out_job_is_not_retried_and_others_are_not_charged(make_server):
    server = make_server(2)
    tiny = [server.submit(pid_of_worker, (i,)) for i in range(200)]
    slow = server.submit(sleepy, (30,), timeout=0.5)
    more = [server.submit(pid_of_worker, (i,)) for i in range(200)]
    with pytest.raises(JobTimeoutError):
        slow()
    assert all(isinstance(job(), int) for job in tiny + more)
    assert all(job.attempts == 0 for job in tiny + more)
    assert slow.attempts == 0


def test_server_job_timeout_is_the_default_and_submit_overrides_it(make_server):
    server = make_server(1, job_timeout=0.5)
    with pytest.raises(JobTimeoutError):
        server.submit(sleepy, (30,))()
    assert server.submit(sleepy, (1.0,), timeout=5)() == 1.0


def test_template_timeout(make_server):
    server = make_server(1)
    with pytest.raises(JobTimeoutError):
        Template(server, sleepy, timeout=0.5).submit(30)()


@pytest.mark.parametrize("bad", [0, -1, float("nan"), float("inf")])
def test_a_timeout_that_is_not_a_positive_number_is_a_value_error(make_server, bad):
    server = make_server(0)
    with pytest.raises(ValueError, match="timeout must be a positive number of seconds"):
        server.submit(sleepy, (1,), timeout=bad)
    with pytest.raises(ValueError, match="job_timeout must be a positive number"):
        make_server(0, job_timeout=bad)
    with pytest.raises(ValueError, match="timeout must be a positive"):
        Template(server, sleepy, timeout=bad)


def test_a_timeout_of_the_wrong_type_is_a_type_error(make_server):
    server = make_server(0)
    with pytest.raises(TypeError, match="timeout must be a number of seconds"):
        server.submit(sleepy, (1,), timeout="10")
    with pytest.raises(TypeError, match="timeout must be a number of seconds"):
        server.submit(sleepy, (1,), timeout=True)


def test_terminate_a_running_job_kills_its_worker_and_raises_cancelled_error(make_server, tmp_path):
    server = make_server(1)
    before = server.submit(pid_of_worker, (0,))()
    mark = tmp_path / "started"
    job = server.submit(marked, (str(mark), 30))
    deadline = time.monotonic() + 30
    while not mark.exists():
        assert time.monotonic() < deadline, "the job never started"
        time.sleep(0.01)
    start = time.monotonic()
    assert job.terminate() is True
    with pytest.raises(concurrent.futures.CancelledError):
        job.result(1)
    assert time.monotonic() - start < 1
    assert job.cancelled() and job.done()
    assert job.terminate() is False  # done already: nothing to do
    start = time.monotonic()
    assert server.submit(pid_of_worker, (0,))() != before
    assert time.monotonic() - start < 1
    server.wait()  # the terminated job counts as finished


def test_the_status_counts_a_timed_out_job_as_timeout_and_a_terminated_one_cancelled(make_server, tmp_path):
    server = make_server(1)
    with pytest.raises(JobTimeoutError):
        server.submit(sleepy, (30,), timeout=0.5)()
    mark = tmp_path / "started"
    job = server.submit(marked, (str(mark), 30))
    deadline = time.monotonic() + 30
    while not mark.exists():
        assert time.monotonic() < deadline, "the job never started"
        time.sleep(0.01)
    assert job.terminate() is True
    server.wait()
    jobs = server.status()["jobs"]
    assert (jobs["ok"], jobs["timeout"], jobs["cancelled"]) == (0, 1, 1), jobs


def test_terminate_a_queued_job_cancels_it_and_a_finished_one_does_nothing(make_server):
    server = make_server(1)
    running = server.submit(sleepy, (0.5,))
    queued = server.submit(sleepy, (0.1,))
    assert queued.terminate() is True
    assert queued.cancelled()
    assert running() == 0.5
    assert running.terminate() is False
    server.wait()


def test_terminate_wakes_as_completed_and_runs_done_callbacks(make_server, tmp_path):
    server = make_server(1)
    mark = tmp_path / "started"
    job = server.submit(marked, (str(mark), 30))
    called = []
    job.add_done_callback(called.append)
    deadline = time.monotonic() + 30
    while not mark.exists():
        assert time.monotonic() < deadline
        time.sleep(0.01)
    job.terminate()
    assert list(concurrent.futures.as_completed([job], timeout=1)) == [job]
    assert called == [job]


def test_executor_job_timeout_and_future_terminate(tmp_path):
    with Executor(1, job_timeout=0.5) as pool:
        future = pool.submit(sleepy, 30)
        with pytest.raises(JobTimeoutError):
            future.result(5)
        assert pool.submit(sleepy, 0.1).result(5) == 0.1
        assert list(pool.map(sleepy, [0.01, 0.02])) == [0.01, 0.02]
    with Executor(1) as pool:
        mark = tmp_path / "started"
        future = pool.submit(marked, str(mark), 30)
        deadline = time.monotonic() + 30
        while not mark.exists():
            assert time.monotonic() < deadline
            time.sleep(0.01)
        assert future.terminate() is True
        with pytest.raises(concurrent.futures.CancelledError):
            future.result(1)
        assert pool.submit(sleepy, 0.01).result(5) == 0.01


def test_a_job_finishing_as_its_deadline_passes_has_exactly_one_outcome(make_server):
    server = make_server(2)
    jobs = [server.submit(sleepy, (0.2,), timeout=0.2) for _ in range(20)]
    outcomes = []
    for job in jobs:
        try:
            outcomes.append(job.result(10))
        except JobTimeoutError:
            outcomes.append("timeout")
    assert len(outcomes) == 20
    assert all(job.done() and not job.cancelled() for job in jobs)
    server.wait()


def test_a_worker_is_replaced_after_max_jobs_per_worker_jobs(make_server):
    server = make_server(1, max_jobs_per_worker=5)
    pids = [server.submit(pid_of_worker, (i,))() for i in range(20)]
    assert [pids.count(pid) for pid in dict.fromkeys(pids)] == [5, 5, 5, 5]
    jobs = [server.submit(pid_of_worker, (i,)) for i in range(500)]  # batched: still 5 per worker
    counts = {}
    for job in jobs:
        pid = job()
        counts[pid] = counts.get(pid, 0) + 1
    assert set(counts.values()) == {5}


def test_a_worker_over_the_memory_limit_is_stopped_and_its_job_fails_saying_so(make_server):
    server = make_server(1, worker_memory_limit="100MiB")
    limit = "passed the worker memory limit of 100 MiB"
    with pytest.raises(ppft_client.WorkerLostError, match=limit) as info:
        server.submit(hog, (300,))()
    assert "MiB, passed" in str(info.value) and "(hog)" in str(info.value)
    assert server.submit(hog, (1,))() == 1  # the pool healed


def hog(megabytes):
    import time

    data = bytearray(megabytes << 20)
    for i in range(0, len(data), 4096):
        data[i] = 1
    time.sleep(10 if megabytes > 50 else 0)
    return len(data) >> 20


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"worker_memory_limit": "2 gigs"}, ValueError, "worker_memory_limit must be a size such as '2GiB'"),
        ({"worker_memory_limit": "0"}, ValueError, "worker_memory_limit must be at least 1 MiB"),
        ({"worker_memory_limit": 1.5j}, TypeError, "worker_memory_limit must be a size"),
        ({"max_jobs_per_worker": 0}, ValueError, "max_jobs_per_worker must be >= 1"),
        ({"max_jobs_per_worker": 2.5}, TypeError, "max_jobs_per_worker must be a whole number"),
    ],
)
def test_worker_limits_that_do_not_parse_are_errors_naming_the_argument(make_server, kwargs, error, match):
    with pytest.raises(error, match=match):
        make_server(0, **kwargs)
    with pytest.raises(error, match=match):
        Executor(0, **kwargs)
