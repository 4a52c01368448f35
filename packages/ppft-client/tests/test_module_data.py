"""Module data read by a job: captured by `function_job`, carried by each job, put in place by `JobRunner`.

Client and worker in one process, as `Server.submit` and a worker do it: `function_job` builds (or reuses)
the body and reads the module data, `prepared.wrap(args)` pickles a job's arguments with it, and
`JobRunner.run` runs the job. Scripts run as users run them are in tests/test_module_data_scripts.py.
"""

from __future__ import annotations

import logging
import pickle
import sys
import threading
import types
from typing import Any

import pytest

from ppft_client.shipping.functions import function_job, pickle_args, unpickle
from ppft_protocol import Job
from ppft_worker.process.execute import JobRunner

PROTO = 5
TABLE = {"a": 1, "b": 2}
LIMITS = [1]
COUNTER = 0
LOCK = threading.Lock()


def score(k):
    return TABLE[k] * 10 + LIMITS[0]


def pure(x):
    return x + 1


def bump():
    global COUNTER
    COUNTER += 1
    LIMITS.append(COUNTER)
    return COUNTER, len(LIMITS)


def locked():
    with LOCK:
        return 1


def later():
    return NOT_YET[0]  # type: ignore[name-defined]  # noqa: F821 - defined by a test, after the first submit


class Runner:
    """A worker: bodies sent once, jobs run in order, values read as the caller does."""

    def __init__(self) -> None:
        self.runner = JobRunner()
        self.ids = iter(range(1, 1 << 30))

    def job(self, func: Any, args: tuple[Any, ...] = (), **kwargs: Any) -> Job:
        body, data = function_job(func, kwargs.get("depfuncs", ()), (), kwargs.get("globals"), PROTO)
        if not self.runner.has_body(body.digest):
            self.runner.add_body(body)
        sargs = pickle_args(args, PROTO) if data is None else data.wrap(args, PROTO)
        return Job(next(self.ids), body.digest, sargs, PROTO)

    def run(self, job: Job) -> Any:
        result = self.runner.run(job)
        if not result.ok:
            return (result.error_type, result.error_message)
        return unpickle(result.value)


@pytest.fixture
def worker() -> Runner:
    return Runner()


@pytest.fixture
def restore():
    saved = dict(TABLE), list(LIMITS), COUNTER
    yield
    TABLE.clear()
    TABLE.update(saved[0])
    LIMITS[:] = saved[1]
    globals()["COUNTER"] = saved[2]
    globals().pop("NOT_YET", None)


def test_a_function_that_reads_no_module_data_carries_nothing():
    _, data = function_job(pure, (), (), None, PROTO)
    assert data is None


def test_values_are_read_at_each_submit_and_jobs_of_two_submits_never_mix(worker, restore):
    first = worker.job(score, ("b",))
    LIMITS[0] = 5  # in place
    second = worker.job(score, ("b",))
    TABLE["b"] = 3
    third = worker.job(score, ("b",), globals=globals())
    # one worker, one namespace for the function, jobs of three submits interleaved
    assert [worker.run(job) for job in (third, first, second, first)] == [35, 21, 25, 21]


def test_the_body_is_reused_while_the_data_changes(restore):
    body1, _ = function_job(score, (), (), None, PROTO)
    LIMITS[0] = 9
    body2, _ = function_job(score, (), (), None, PROTO)
    assert body1 is body2
    assert b"LIMITS" not in body1.pickled  # the data is not in the body


def test_what_a_job_changes_stays_in_that_job(worker, restore):
    job1, job2 = worker.job(bump), worker.job(bump)
    assert [worker.run(job1), worker.run(job2), worker.run(job1)] == [(1, 2), (1, 2), (1, 2)]
    assert (COUNTER, LIMITS) == (0, [1])


def test_a_name_defined_after_the_first_submit_travels_from_then_on(worker, restore):
    assert worker.run(worker.job(later)) == ("builtins.NameError", "name 'NOT_YET' is not defined")
    globals()["NOT_YET"] = [7]
    assert worker.run(worker.job(later)) == 7


def test_a_data_name_rebound_to_a_function_ships_the_function(worker, restore):
    namespace: dict[str, Any] = {"__name__": "ppft_test_not_importable", "helper": [2]}
    func = eval("lambda x: helper(x) if callable(helper) else helper[0] * x", namespace)
    assert worker.run(worker.job(func, (5,))) == 10
    namespace["helper"] = eval("lambda x: x + 100", namespace)
    assert worker.run(worker.job(func, (5,))) == 105


def test_a_lambda_sees_its_module_data_changed_in_place(worker):
    namespace: dict[str, Any] = {"__name__": "ppft_test_not_importable", "rates": {"eur": 2}}
    func = eval("lambda x: x * rates['eur']", namespace)
    first = worker.job(func, (5,))
    namespace["rates"]["eur"] = 3
    second = worker.job(func, (5,))
    assert [worker.run(second), worker.run(first)] == [15, 10]


def test_a_lock_is_never_copied_and_the_job_that_reads_it_says_why(worker, caplog):
    with caplog.at_level(logging.WARNING, "ppft.client"):
        error_type, message = worker.run(worker.job(locked))
    assert error_type == "builtins.NameError"
    assert message.startswith("name 'LOCK' is not defined on this worker: the caller's global LOCK could not")
    assert "a _thread.lock, cannot be pickled" in message
    assert "reads the global LOCK, which cannot be sent to a worker" in caplog.text


def test_an_instance_holding_a_lock_is_not_sent_either(worker):
    namespace: dict[str, Any] = {"__name__": "ppft_test_not_importable"}
    exec(
        "import threading\nclass Holder:\n    def __init__(self):\n        self.lock = threading.Lock()\n",
        namespace,
    )
    namespace["HELD"] = namespace["Holder"]()
    func = eval("lambda: HELD", namespace)
    error_type, message = worker.run(worker.job(func))
    assert error_type == "builtins.NameError"
    assert "global HELD could not be sent: its value, a ppft_test_not_importable.Holder," in message


def test_data_of_a_class_the_body_defines_is_of_that_class(worker):
    namespace: dict[str, Any] = {}  # what exec(code, {}) gives: no __name__, classes of module "builtins"
    exec("class P:\n    pass\nORIGIN = P()\ndef check():\n    return isinstance(ORIGIN, P)\n", namespace)
    assert worker.run(worker.job(namespace["check"])) is True


def test_the_arguments_put_the_values_in_whatever_main_is_when_loaded():
    """What a worker that knows nothing of module data (ppft 2.0.0) does: load the arguments with
    `sys.modules["__main__"]` set to the function's namespace."""
    _, data = function_job(score, (), (), None, PROTO)
    assert data is not None
    sargs = data.wrap(("a",), PROTO)
    namespace = types.ModuleType("__main__")
    saved = sys.modules["__main__"]
    sys.modules["__main__"] = namespace
    try:
        args = pickle.loads(sargs)
    finally:
        sys.modules["__main__"] = saved
    assert args == ("a",)
    assert vars(namespace)["TABLE"] == TABLE and vars(namespace)["TABLE"] is not TABLE
    assert vars(namespace)["LIMITS"] == LIMITS


def test_an_unpicklable_global_is_said_once_and_stays_explained(worker, caplog):
    namespace: dict[str, Any] = {"__name__": "ppft_test_not_importable", "SOCK": threading.RLock()}
    func = eval("lambda: SOCK", namespace)
    with caplog.at_level(logging.WARNING, "ppft.client"):
        results = [worker.run(worker.job(func)) for _ in range(3)]
    assert caplog.text.count("reads the global SOCK, which cannot be sent") == 1
    assert all("global SOCK could not be sent: its value, a _thread.RLock," in r[1] for r in results)
    namespace["SOCK"] = [1]  # now it can travel
    assert worker.run(worker.job(func)) == [1]
