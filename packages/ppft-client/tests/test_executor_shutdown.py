"""`Executor.shutdown` keeps concurrent.futures' promises: pending jobs still complete after
`shutdown(wait=False)`, `cancel_futures=True` cancels only what has not started, nothing is submitted after
it, and the workers go when the last job is done, at interpreter exit too."""

from __future__ import annotations

import concurrent.futures as cf
import time

import pytest

import ppft_client


def nap(seconds, value):
    import time

    time.sleep(seconds)
    return value


@pytest.fixture
def executor():
    made: list[ppft_client.Executor] = []

    def make(*args, **kwargs):
        ex = ppft_client.Executor(*args, **kwargs)
        made.append(ex)
        return ex

    yield make
    for ex in made:
        ex.shutdown(wait=True, cancel_futures=True)


def test_shutdown_without_waiting_returns_at_once_and_pending_jobs_still_complete(executor):
    ex = executor(2)
    futures = [ex.submit(nap, 0.1, i) for i in range(20)]  # 1 s of work on 2 workers
    start = time.monotonic()
    ex.shutdown(wait=False)
    assert time.monotonic() - start < 0.5
    assert [f.result(timeout=60) for f in futures] == list(range(20))


def test_the_workers_are_released_once_the_last_job_is_done(executor, wait_until, pid_alive):
    ex = executor(2)
    futures = [ex.submit(nap, 0.1, i) for i in range(6)]
    pids = list(ex.server._scheduler.pool.pids)
    ex.shutdown(wait=False)
    assert all(pid_alive(pid) for pid in pids)  # still working
    cf.wait(futures, timeout=60)
    wait_until(lambda: not any(pid_alive(pid) for pid in pids), 20, "the workers to be released")
    assert all(f.result() == i for i, f in enumerate(futures))


def test_cancel_futures_cancels_only_what_has_not_started(executor):
    ex = executor(1)
    first = ex.submit(nap, 0.5, "first")
    time.sleep(0.2)  # not a synchronisation: first must be running, which the assertion below checks
    assert first.running()
    rest = [ex.submit(nap, 0, i) for i in range(50)]
    ex.shutdown(wait=False, cancel_futures=True)
    assert first.result(timeout=60) == "first"
    done, _ = cf.wait(rest, timeout=60)
    assert len(done) == 50  # the cancelled ones too, as concurrent.futures.wait's docs say
    assert any(f.cancelled() for f in rest)
    assert all(f.cancelled() or f.result() == i for i, f in enumerate(rest))  # none failed


def test_submit_after_shutdown_raises_runtime_error(executor):
    ex = executor(1)
    ex.shutdown(wait=False)
    with pytest.raises(RuntimeError, match="cannot schedule new futures after shutdown"):
        ex.submit(nap, 0, 1)


def test_map_after_shutdown_raises_runtime_error(executor):
    ex = executor(1)
    ex.shutdown(wait=False)
    with pytest.raises(RuntimeError, match="cannot schedule new futures after shutdown"):
        ex.map(nap, [0], [1])


def test_a_with_block_waits_for_every_job(executor):
    with executor(2) as ex:
        futures = [ex.submit(nap, 0.05, i) for i in range(10)]
    assert all(f.done() for f in futures)
    assert [f.result() for f in futures] == list(range(10))
    assert ex.server._exiting


def test_shutdown_twice_waits_the_second_time(executor):
    ex = executor(1)
    futures = [ex.submit(nap, 0.1, i) for i in range(5)]
    ex.shutdown(wait=False)
    ex.shutdown(wait=True)
    assert all(f.done() for f in futures)
    assert ex.server._exiting


SCRIPT_EXIT = """
import os
import ppft_client

def write(path, seconds):
    import time
    time.sleep(seconds)
    with open(path, "w") as f:
        f.write("done")
    return path

ex = ppft_client.Executor(2)
futures = [ex.submit(write, os.path.abspath(f"out{i}"), 0.2) for i in range(6)]
print(" ".join(str(pid) for pid in ex.server._scheduler.pool.pids), flush=True)
ex.shutdown(wait=False)
"""


def test_interpreter_exit_after_shutdown_without_waiting_completes_the_jobs_and_leaves_no_worker(
    tmp_path, run_script, pid_alive, wait_until
):
    proc = run_script(SCRIPT_EXIT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    pids = [int(pid) for pid in out.split()]
    assert sorted(p.name for p in tmp_path.glob("out*")) == [f"out{i}" for i in range(6)]
    wait_until(lambda: not any(pid_alive(pid) for pid in pids), 10, "no worker left")


SCRIPT_NO_NODE = """
import ppft_client
ex = ppft_client.Executor(0)
future = ex.submit(abs, -1)
ex.shutdown(wait=False)
"""


def test_interpreter_exit_does_not_wait_for_jobs_no_node_can_run(run_script):
    start = time.monotonic()
    proc = run_script(SCRIPT_NO_NODE)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0 and time.monotonic() - start < 20
    assert "1 job(s) of an Executor cannot run, as no node is left to run them" in err
