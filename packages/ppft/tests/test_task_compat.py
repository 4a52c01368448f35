"""The internals pathos relies on: `_Task` (the job class) as ppft 1.7 had it, and `Server`'s attributes."""

from __future__ import annotations

import pickle
import threading

import pytest

import ppft
from ppft_client.shipping.functions import function_body, pickle_args


def square(x):
    return x * x


def chatty(x):
    print("working on", x)
    return x + 1


def fails(x):
    raise KeyError(f"no {x}")


def test_lock_is_held_until_the_job_finishes(make_server) -> None:
    server = make_server(0)  # no worker: the job waits in the queue
    job = server.submit(square, (3,))
    assert isinstance(job.lock, type(threading.Lock()))
    assert job.lock.acquire(blocking=False) is False
    server.set_ncpus(1)
    assert job.lock.acquire(timeout=30) is True  # released as the job finished
    job.lock.release()
    assert job.finished and job() == 9


def test_lock_of_a_finished_job_is_free(make_server) -> None:
    job = make_server(1).submit(square, (2,))
    job.wait(30)
    assert job.lock.acquire(blocking=False) is True


def test_lock_is_released_when_a_queued_job_is_cancelled(make_server) -> None:
    job = make_server(0).submit(square, (2,))
    lock = job.lock
    assert job.cancel()
    assert lock.acquire(blocking=False) is True


def test_sresult_is_the_pickle_of_value_and_output(make_server) -> None:
    job = make_server(1).submit(chatty, (1,))
    assert pickle.loads(job.sresult) == (2, "working on 1\n")
    assert job(raw_result=True) == job.sresult


def test_sresult_of_a_job_that_raised_has_none_and_the_traceback(make_server) -> None:
    job = make_server(1).submit(fails, (7,))
    value, output = pickle.loads(job(True))
    assert value is None
    assert "Traceback" in output and "KeyError" in output and "no 7" in output


def test_task_keeps_ppft_attributes(make_server) -> None:
    server = make_server(1)

    def cb(*args: object) -> None:
        pass

    job = server.submit(square, (4,), callback=cb, callbackargs=("x",), group="g1")
    server.wait()
    assert (job.server, job.callback, job.callbackargs, job.group) == (server, cb, ("x",), "g1")
    assert isinstance(job.tid, int) and job.finished is True


class _Classic(ppft._Task):
    """A subclass written for ppft 1.7: its own constructor, and a finalize that looks at the result."""

    def __init__(self, server, tid, callback=None):
        ppft._Task.__init__(self, server, tid, callback, ("cbarg",), "classic")
        self.seen: list[object] = []

    def finalize(self, sresult):
        self.seen.append((pickle.loads(sresult), self.finished))
        super().finalize(sresult)
        self.finished = True  # as ppft 1.7's finalize did; accepted


def _insert(server: ppft.Server, task: ppft._Task, func, args) -> None:
    server.insert(function_body(func), pickle_args(args, pickle.HIGHEST_PROTOCOL), task)


def test_subclass_made_the_ppft_17_way_runs_through_insert(make_server) -> None:
    server = make_server(1)
    task = _Classic(server, 1000)
    _insert(server, task, square, (6,))
    assert task.wait(30) and task() == 36


def test_overridden_finalize_runs_before_the_job_counts_as_finished(make_server) -> None:
    server = make_server(1)
    task = _Classic(server, 1001)
    _insert(server, task, square, (5,))
    server.wait()  # returns only once finalize has run
    assert task.seen == [((25, ""), False)]


def test_base_finalize_runs_the_classic_callback(make_server) -> None:
    server = make_server(1)
    got: list[tuple[object, ...]] = []
    task = _Classic(server, 1002, callback=lambda *a: got.append(a))
    _insert(server, task, square, (3,))
    server.wait()
    assert got == [("cbarg", 9)]


def test_wrapping_subclass_without_init_reads_the_wrapped_task(make_server) -> None:
    """pathos's ApplyResult: a `_Task` subclass that never calls `_Task.__init__` and overrides properties."""

    class Wrapper(ppft._Task):
        def __init__(self, task):
            self._task = task

        @property
        def finished(self):
            return self._task.finished

        @property
        def lock(self):
            return self._task.lock

    job = make_server(1).submit(square, (8,))
    wrapped = Wrapper(job)
    condition = threading.Condition(wrapped.lock)  # pathos waits this way: acquire returns once finished
    with condition:
        assert wrapped.finished
    assert pickle.loads(job.sresult) == (64, "") and "Job" in repr(wrapped)


def test_exiting_true_refuses_jobs_and_false_serves_again(make_server) -> None:
    server = make_server(1)
    server._exiting = True
    with pytest.raises(ppft.DestroyedServerError):
        server.submit(square, (2,))
    server._exiting = False
    assert server.submit(square, (2,))() == 4


def test_ppservers_are_host_port_tuples_and_auto_ppservers_a_list(make_server) -> None:
    server = make_server(0, ppservers=("127.0.0.1:1",), socket_timeout=3)
    assert server.ppservers == [("127.0.0.1", 1)]
    assert server.auto_ppservers == []


def test_globals_of_a_whole_module_ship_only_what_the_function_uses() -> None:
    import ppft.server as big_module  # many functions, classes and modules in its globals

    assert function_body(square, globals=vars(big_module)) == function_body(square)
