"""The fork server of a pool that replaces workers (`ppft_worker.pool.forkserver`), with real processes:
recycled pools, a fork server that dies or cannot start, no process left behind, and limits on its workers."""

from __future__ import annotations

import collections
import concurrent.futures
import contextlib
import os
import signal
import textwrap
import threading
import time

import pytest

import ppft_client
from ppft_client import JobTimeoutError


def double(x):
    return 2 * x


def pid_of_worker(_):
    import os

    return os.getpid()


def sleepy(seconds):

    time.sleep(seconds)
    return seconds


def hog(megabytes):

    data = bytearray(megabytes << 20)
    for i in range(0, len(data), 4096):
        data[i] = 1
    time.sleep(10 if megabytes > 50 else 0)
    return len(data) >> 20


def _fork_served_worker(server, wait_until):
    """Run jobs until every worker of `server` was forked by the fork server; returns the worker's pid."""
    pool = server._scheduler.pool

    def all_fork_served():
        server.submit(pid_of_worker, (0,))()
        return set(pool.start_methods().values()) == {"forkserver"}

    wait_until(all_fork_served, 30, "a worker forked by the fork server")
    return server.submit(pid_of_worker, (0,))()


def test_a_recycled_pool_forks_its_replacements_and_gives_every_job_one_result(make_server):
    server = make_server(2, max_jobs_per_worker=50)
    seen = collections.Counter()
    lock = threading.Lock()

    def count(value):
        with lock:
            seen[value] += 1

    jobs = [server.submit(double, (i,), callback=count) for i in range(3000)]
    assert [job() for job in jobs] == [2 * i for i in range(3000)]
    server.wait()
    assert seen == collections.Counter(2 * i for i in range(3000))
    pids = collections.Counter(server.submit(pid_of_worker, (i,))() for i in range(500))
    assert max(pids.values()) <= 50
    assert set(server._scheduler.pool.start_methods().values()) == {"forkserver"}


def test_workers_are_still_replaced_when_the_fork_server_is_killed(make_server, wait_until, pid_alive):
    server = make_server(1, max_jobs_per_worker=5)
    _fork_served_worker(server, wait_until)
    pool = server._scheduler.pool
    first = pool.forkserver_pid
    os.kill(first, signal.SIGKILL)
    wait_until(lambda: not pid_alive(first), 10, "the fork server to die")
    pids = [server.submit(pid_of_worker, (i,))() for i in range(40)]  # its workers died with it
    assert max(collections.Counter(pids).values()) <= 5
    wait_until(lambda: pool.forkserver_pid not in (None, first), 10, "a new fork server")
    _fork_served_worker(server, wait_until)


def test_a_fork_server_that_cannot_start_leaves_replacements_to_exec(make_server, monkeypatch):
    monkeypatch.setattr("ppft_worker.pool.forkserver._ENTRY", "import sys; sys.exit(3)")
    server = make_server(1, max_jobs_per_worker=3)
    pids = [server.submit(pid_of_worker, (i,))() for i in range(60)]
    assert set(collections.Counter(pids).values()) == {3}
    pool = server._scheduler.pool
    assert not pool._forkserver.usable
    assert set(pool.start_methods().values()) == {"exec"}


def test_no_process_is_left_after_destroy(make_server, wait_until, pid_alive):
    server = make_server(2, max_jobs_per_worker=5)
    _fork_served_worker(server, wait_until)
    pool = server._scheduler.pool
    pids = [*pool.pids, pool.forkserver_pid]
    running = server.submit(sleepy, (30,))
    wait_until(lambda: pool.inflight, 10, "the sleeping job to start")
    server.destroy()
    assert running.done()
    for pid in pids:
        wait_until(lambda pid=pid: not pid_alive(pid), 10, f"process {pid} to exit")


def test_destroy_ends_when_a_stopped_fork_server_never_reports_exits(make_server, wait_until, pid_alive):
    server = make_server(2, max_jobs_per_worker=5)
    _fork_served_worker(server, wait_until)
    pool = server._scheduler.pool
    pids = list(pool.pids)
    forkserver = pool.forkserver_pid
    os.kill(forkserver, signal.SIGSTOP)  # alive, but it reaps nothing and reports nothing
    try:
        done = threading.Event()
        threading.Thread(target=lambda: (server.destroy(), done.set()), daemon=True).start()
        # each worker is taken as dead EXIT_REPORT_WAIT after its pidfd said so (about 3 s in all); waiting
        # on the server instead ends only when the pool's own kill timeouts run out (10 s)
        assert done.wait(8), "destroy() waited for exit codes that a stopped fork server never reports"
    finally:
        with contextlib.suppress(ProcessLookupError):  # destroy() killed it
            os.kill(forkserver, signal.SIGCONT)
    for pid in [*pids, forkserver]:
        wait_until(lambda pid=pid: not pid_alive(pid), 10, f"process {pid} to exit")


SIGKILLED_CLIENT = textwrap.dedent(
    """
    import json, os, sys, time
    import ppft_client

    def pid_of_worker(_):
        import os
        return os.getpid()

    def sleepy(seconds):
        import time
        time.sleep(seconds)

    server = ppft_client.Server(2, max_jobs_per_worker=3)
    pool = server._scheduler.pool
    deadline = time.monotonic() + 30
    while set(pool.start_methods().values()) != {"forkserver"} and time.monotonic() < deadline:
        server.submit(pid_of_worker, (0,))()
    server.submit(sleepy, (60,))
    while not pool.inflight and time.monotonic() < deadline:
        time.sleep(0.01)
    print(json.dumps([*pool.pids, pool.forkserver_pid]), flush=True)
    sys.stdin.read()
    """
)


def test_no_process_is_left_after_the_client_is_sigkilled(run_script, wait_until, pid_alive):
    import json

    proc = run_script(SIGKILLED_CLIENT)
    pids = json.loads(proc.stdout.readline())
    assert len(pids) == 3 and all(pid_alive(pid) for pid in pids)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(10)
    for pid in pids:
        wait_until(lambda pid=pid: not pid_alive(pid), 10, f"process {pid} to exit")


def test_a_fork_served_worker_honours_a_time_limit(make_server, wait_until):
    server = make_server(1, max_jobs_per_worker=4)
    before = _fork_served_worker(server, wait_until)
    job = server.submit(sleepy, (30,), timeout=1)
    with pytest.raises(JobTimeoutError, match="timeout of 1 s"):
        job.result(5)
    assert server.submit(pid_of_worker, (0,))() != before


def test_a_fork_served_worker_is_stopped_by_terminate(make_server, wait_until):
    server = make_server(1, max_jobs_per_worker=4)
    _fork_served_worker(server, wait_until)
    pool = server._scheduler.pool
    job = server.submit(sleepy, (30,))
    wait_until(lambda: pool.inflight, 10, "the job to start")
    assert job.terminate()
    with pytest.raises(concurrent.futures.CancelledError):
        job.result(5)
    assert server.submit(double, (4,)).result(5) == 8


def test_a_fork_served_worker_honours_the_memory_limit(make_server, wait_until):
    server = make_server(1, max_jobs_per_worker=4, worker_memory_limit="100MiB")
    _fork_served_worker(server, wait_until)
    with pytest.raises(ppft_client.WorkerLostError, match="passed the worker memory limit of 100 MiB"):
        server.submit(hog, (300,)).result(20)
    assert server.submit(hog, (1,)).result(20) == 1


def test_a_pool_closed_before_its_fork_server_is_ready_prints_nothing(run_script):
    proc = run_script(
        "import ppft_client\n"
        "server = ppft_client.Server(1, max_jobs_per_worker=5)\n"
        "server.destroy()\n"
        "print('done')\n"
    )
    out, err = proc.communicate(timeout=60)
    assert (proc.returncode, out, err) == (0, "done\n", "")
