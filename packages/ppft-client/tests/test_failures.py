"""Errors surface and nothing hangs: job exceptions, dying workers, destroy with work in flight."""

from __future__ import annotations

import io
import os
import signal
import time
from contextlib import redirect_stderr, redirect_stdout

import pytest

from ppft_client import DestroyedServerError, RemoteTraceback, ResultDecodeError, WorkerLostError


class CustomError(Exception):
    pass


def divide(a, b):
    return a / b


def raise_custom(msg):
    raise CustomError(msg)


def talk(x):
    print("hello from the job", x)
    import sys

    print("to stderr", file=sys.stderr)
    return x


def die_once(marker, how):
    """Kill this worker the first time (marker file absent), return normally when rerun."""
    import ctypes
    import os
    import signal

    if not os.path.exists(marker):
        open(marker, "w").close()
        if how == "sigkill":
            os.kill(os.getpid(), signal.SIGKILL)
        elif how == "exit":
            os._exit(3)
        else:
            ctypes.string_at(0)  # a real segmentation fault
    return "survived"


def always_die():
    import os

    os._exit(7)


def add_one(x):
    return x + 1


def sleep_then(x, seconds):
    import time

    time.sleep(seconds)
    return x


def make_unimportable(directory):
    """Return an instance of a class from a module that exists only where the job runs."""
    import os
    import sys

    with open(os.path.join(directory, "only_on_the_worker.py"), "w") as f:
        f.write("class Thing:\n    pass\n")
    sys.path.insert(0, directory)
    import only_on_the_worker

    return only_on_the_worker.Thing()


def test_exception_is_reraised_with_remote_traceback(make_server):
    server = make_server(1)
    job = server.submit(divide, (1, 0))
    with pytest.raises(ZeroDivisionError) as info:
        job()
    cause = info.value.__cause__
    assert isinstance(cause, RemoteTraceback)
    assert "divide" in cause.tb and "ZeroDivisionError" in cause.tb
    assert isinstance(job.exception(), ZeroDivisionError)


def test_user_exception_type_survives(make_server):
    server = make_server(1)
    with pytest.raises(CustomError, match="boom"):
        server.submit(raise_custom, ("boom",), (CustomError,)).result(timeout=30)


def test_output_is_replayed_once_on_retrieval(make_server):
    server = make_server(1)
    job = server.submit(talk, (7,))
    job.wait(30)
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        assert job() == 7
        assert job() == 7
    assert (out.getvalue(), err.getvalue()) == ("hello from the job 7\n", "to stderr\n")


@pytest.mark.parametrize("how", ["sigkill", "exit", "segfault"])
def test_job_whose_worker_dies_is_rerun(make_server, tmp_path, how):
    server = make_server(1)
    job = server.submit(die_once, (str(tmp_path / "marker"), how))
    assert job.result(timeout=60) == "survived"
    assert server.submit(add_one, (1,)).result(timeout=60) == 2  # the pool healed


def test_job_that_always_kills_its_worker_fails_and_the_next_job_runs(make_server):
    server = make_server(2)
    bad = server.submit(always_die)
    goods = [server.submit(add_one, (i,)) for i in range(50)]
    with pytest.raises(WorkerLostError, match=r"exited with code 7.*run alone 3 time"):
        bad.result(timeout=60)
    assert [g.result(timeout=60) for g in goods] == list(range(1, 51))
    assert server.submit(add_one, (1,)).result(timeout=60) == 2


def test_crashing_job_in_a_batch_does_not_fail_its_neighbours(make_server):
    server = make_server(1)
    for job in [server.submit(add_one, (i,)) for i in range(2000)]:  # learn that jobs are tiny: big batches
        job.result(timeout=60)
    jobs = [server.submit(add_one, (i,)) for i in range(300)]
    bad = server.submit(always_die)
    more = [server.submit(add_one, (i,)) for i in range(300)]
    with pytest.raises(WorkerLostError):
        bad.result(timeout=60)
    assert [j.result(timeout=60) for j in jobs + more] == list(range(1, 301)) * 2


def test_destroy_with_pending_jobs_fails_them_at_once(make_server):
    server = make_server(1)
    running = server.submit(sleep_then, (1, 30))
    queued = [server.submit(add_one, (i,)) for i in range(10)]
    time.sleep(0.2)  # not synchronisation: only lets the first job start, either way the assertions hold
    start = time.monotonic()
    server.destroy()
    assert time.monotonic() - start < 5
    for job in [running, *queued]:
        with pytest.raises(DestroyedServerError):
            job.result(timeout=5)
        with pytest.raises(DestroyedServerError):
            job()


def test_unpicklable_result_raises_clearly_and_server_keeps_working(make_server, tmp_path):
    server = make_server(1)
    job = server.submit(make_unimportable, (str(tmp_path),))
    with pytest.raises(ResultDecodeError, match="only_on_the_worker") as info:
        job.result(timeout=30)
    assert "cannot be unpickled here" in str(info.value)
    assert server.submit(add_one, (1,)).result(timeout=30) == 2


def test_worker_killed_from_outside_while_idle_is_replaced(make_server, wait_until):
    server = make_server(2)
    assert server.submit(add_one, (1,)).result(timeout=30) == 2
    pool = server._scheduler.pool
    wait_until(lambda: len(pool.pids) == 2, 10, "two workers")
    victim = pool.pids[0]
    os.kill(victim, signal.SIGKILL)
    wait_until(lambda: victim not in pool.pids and len(pool.pids) == 2, 10, "a replacement worker")
    assert [server.submit(add_one, (i,)).result(timeout=30) for i in range(5)] == [1, 2, 3, 4, 5]
