"""The dask node without a cluster: `ppservers` entries, the runner that travels to dask workers, failures.

The runner (`ppft_worker.process.dask_runner`) must give the same results as the local workers'
`JobRunner`; the tests here run both on the same jobs, in this process, and compare every field.
tests/test_dask.py runs the node against real dask processes.
"""

from __future__ import annotations

import io
import pickle
import sys
import types
from typing import Any

import pytest

from ppft_client import Server
from ppft_client.nodes.dask import DaskNode, _with_ppft_exception
from ppft_client.nodes.dask_entries import DaskEntry, DaskUnavailableError, split_dask_entries
from ppft_client.shipping.functions import function_body, pickle_args
from ppft_protocol import FunctionBody, Job, Result, function_digest
from ppft_worker.errors import JobSetupError, UnpicklableResultError, WorkerLostError
from ppft_worker.process import dask_runner
from ppft_worker.process.execute import JobRunner
from ppft_worker.runtime.loop import Loop


def square(x):
    return x * x


def fails(x):
    raise KeyError(f"no {x}")


def chatty(x):
    print("to stdout", x)
    print("to stderr", x, file=sys.stderr)
    return x


def leaves(code):
    raise SystemExit(code)


def returns_generator(n):
    return (i for i in range(n))


# -- ppservers entries ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("entry", "name", "address"),
    [
        ("dask://sched.example:8786", "dask://sched.example:8786", "tcp://sched.example:8786"),
        ("dask://sched.example", "dask://sched.example:8786", "tcp://sched.example:8786"),
        ("dask+tls://10.0.0.1:9000", "dask+tls://10.0.0.1:9000", "tls://10.0.0.1:9000"),
        ("dask://[::1]:8000", "dask://[::1]:8000", "tcp://[::1]:8000"),
        ("DASK://Host:1/", "dask://Host:1", "tcp://Host:1"),
    ],
)
def test_dask_entries_become_nodes_with_their_address(entry, name, address):
    rest, found = split_dask_entries(("host:60000", entry, "*"))
    assert rest == ("host:60000", "*")
    assert found == [DaskEntry(name, address, True)]


@pytest.mark.parametrize("entry", ["dask://", "dask://host:port", "dask://host:99999", "dask://a/b:1"])
def test_unreadable_dask_entry_is_named_in_a_value_error(entry):
    with pytest.raises(ValueError, match="ppservers entry"):
        split_dask_entries((entry,))


def test_dask_like_host_names_stay_ppservers():
    assert split_dask_entries(("dask-node:60000", "dask"))[0] == ("dask-node:60000", "dask")


def test_without_dask_installed_server_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "distributed", None)  # find_spec then says: not installed
    with pytest.raises(DaskUnavailableError, match=r'pip install "ppft\[dask\]"'):
        Server(0, ppservers=("dask://127.0.0.1:8786",))


# -- the runner gives what JobRunner gives -----------------------------------------------------------------


def _body_tuple(body: FunctionBody) -> tuple[Any, ...]:
    return (body.digest, body.name, body.sources, body.imports, body.pickled)


def _both(body: FunctionBody, *args: Any) -> tuple[Result, Result]:
    """The job run by JobRunner and by the dask runner (with the client's completion of its result)."""
    sargs = pickle_args(args, 5)
    local = JobRunner()
    local.add_body(body)
    expected = local.run(Job(1, body.digest, sargs, 5))
    (fields,) = dask_runner.run_batch((_body_tuple(body),), ((1, body.digest, sargs, 5),))
    return expected, _with_ppft_exception(Result(*fields))


def _same(expected: Result, got: Result) -> None:
    for field in ("job_id", "ok", "output", "stderr_spans", "error_type", "error_message", "traceback"):
        assert getattr(got, field) == getattr(expected, field), field
    if expected.ok:
        assert pickle.loads(got.value) == pickle.loads(expected.value)
    if expected.exception:
        a, b = pickle.loads(expected.exception), pickle.loads(got.exception)
        assert (type(a), a.args) == (type(b), b.args)
    else:
        assert not got.exception


def _hand_made(name: str, *sources: str, imports: tuple[str, ...] = ()) -> FunctionBody:
    digest = function_digest(name, sources, imports, b"")
    return FunctionBody(digest, name, sources, imports, b"")


@pytest.mark.parametrize(
    ("func", "args"),
    [(square, (12,)), (fails, ("key",)), (chatty, (3,)), (leaves, (4,)), (returns_generator, (2,))],
)
def test_runner_matches_jobrunner(func, args):
    _same(*_both(function_body(func, (), (), None), *args))


def test_runner_matches_jobrunner_on_a_pickled_lambda():
    _same(*_both(function_body(lambda x, y: divmod(x, y), (), (), None), 17, 5))


def test_runner_matches_jobrunner_on_a_missing_module():
    expected, got = _both(function_body(square, (), ("no_such_module_for_ppft",), None), 2)
    _same(expected, got)
    assert isinstance(pickle.loads(got.exception), JobSetupError)


def test_unpicklable_value_is_the_ppft_error():
    expected, got = _both(function_body(returns_generator, (), (), None), 2)
    assert isinstance(pickle.loads(got.exception), UnpicklableResultError)
    assert got.error_message == expected.error_message


def test_classes_of_shipped_sources_arrive_as_the_callers_own(monkeypatch):
    point = "class Point:\n    def __init__(self, x):\n        self.x = x\n"
    oops = "class Oops(Exception):\n    pass\n"
    make = _hand_made("make", point, "def make(x):\n    return Point(x)\n")
    bad = _hand_made("bad", oops, "def bad(x):\n    raise Oops(x)\n")
    caller_main = types.ModuleType("__main__")
    exec(point + oops, caller_main.__dict__)
    for body, args in ((make, (5,)), (bad, ("why",))):
        expected, got = _both(body, *args)
        monkeypatch.setitem(sys.modules, "__main__", caller_main)
        try:
            if expected.ok:
                value = pickle.loads(got.value)
                assert type(value) is caller_main.Point and value.x == 5
            else:
                _same(expected, got)
                assert type(pickle.loads(got.exception)) is caller_main.Oops
        finally:
            monkeypatch.undo()


def test_output_of_other_threads_is_not_captured():
    import threading

    body = function_body(chatty, (), (), None)
    sargs = pickle_args((1,), 5)
    dask_runner.run_batch((_body_tuple(body),), ((1, body.digest, sargs, 5),))  # installs the proxy
    seen: list[str] = []
    original = sys.stdout._original  # type: ignore[attr-defined]
    sink = io.StringIO()
    sys.stdout._original = sink  # type: ignore[attr-defined]
    try:
        thread = threading.Thread(target=lambda: print("not a job"))
        thread.start()
        thread.join(10)
        (fields,) = dask_runner.run_batch((_body_tuple(body),), ((2, body.digest, sargs, 5),))
        seen.append(fields[3])
    finally:
        sys.stdout._original = original  # type: ignore[attr-defined]
    assert sink.getvalue() == "not a job\n"
    assert seen == ["to stdout 1\nto stderr 1\n"]


# -- failures reported by dask ---------------------------------------------------------------------------


class _Task:
    def __init__(self, job_id: int) -> None:
        body = function_body(square, (), (), None)
        self.body = body
        self.wire = Job(job_id, body.digest, pickle_args((job_id,), 5), 5)
        self.attempts = 0
        self.solo = False

    def claim(self) -> bool:
        return True


class _FakeLoop:
    def add_callback(self, *args: Any) -> None:
        pass


class _FakeClient:
    """Takes submissions without running them."""

    def __init__(self, refuse_after: int = 1 << 30) -> None:
        self.loop = _FakeLoop()
        self.submitted: list[int] = []
        self.status = "running"
        self.refuse_after = refuse_after

    def submit(self, boot: Any, runner_key: str, blob: bytes, payload: bytes, **kwargs: Any) -> object:
        if len(self.submitted) >= self.refuse_after:
            self.status = "closed"
            raise RuntimeError("Client is closed")
        self.submitted.append(len(pickle.loads(payload)[1]))
        return object()


def _node(client: _FakeClient | None = None) -> tuple[DaskNode, list[Any], list[Any]]:
    results: list[Any] = []
    lost: list[Any] = []
    node = DaskNode(
        Loop(), DaskEntry("dask://h:1", "tcp://h:1", True),
        on_results=lambda pairs, name: results.extend((t.wire.job_id, r, name) for t, r in pairs),
        on_lost=lambda tasks, reason: lost.extend(tasks),
    )  # fmt: skip
    node._running(client or _FakeClient(), 2, False)
    return node, results, lost


def _killed() -> BaseException:
    scheduler = pytest.importorskip("distributed.scheduler")
    worker = types.SimpleNamespace(address="tcp://127.0.0.1:1")
    return scheduler.KilledWorker("key", worker, 3)  # type: ignore[no-any-return]


def test_killed_worker_batch_is_split_into_one_task_per_job():
    node, results, lost = _node()
    assert node._submit([_Task(1), _Task(2), _Task(3)])
    (key,) = node._inflight
    node._finished(key, _killed())
    assert node._client.submitted == [3, 1, 1, 1]
    assert node.inflight == 3 and not results and not lost


def test_killed_worker_single_job_fails_with_worker_lost_error():
    node, results, _ = _node()
    assert node._submit([_Task(7)])
    (key,) = node._inflight
    node._finished(key, _killed())
    ((job_id, result, name),) = results
    assert (job_id, name, result.ok) == (7, "dask://h:1", False)
    error = pickle.loads(result.exception)
    assert isinstance(error, WorkerLostError) and "dask://h:1" in str(error)


def test_cancelled_task_goes_back_to_the_queue():
    import asyncio

    node, results, lost = _node()
    tasks = [_Task(1), _Task(2)]
    assert node._submit(tasks)
    (key,) = node._inflight
    node._finished(key, asyncio.CancelledError())
    assert lost == tasks and not results and node.inflight == 0


def test_lost_scheduler_requeues_everything_in_flight():
    node, _, lost = _node()
    tasks = [_Task(1), _Task(2)]
    assert node._submit(tasks[:1]) and node._submit(tasks[1:])
    node._down("the connection to the dask scheduler was lost")
    assert lost == tasks and not node.ready and node.workers == 0


def test_split_that_the_client_refuses_midway_puts_every_job_back():
    node, results, lost = _node(_FakeClient(refuse_after=2))
    tasks = [_Task(1), _Task(2), _Task(3)]
    assert node._submit(tasks)
    (key,) = node._inflight
    node._finished(key, _killed())
    assert sorted(t.wire.job_id for t in lost) == [1, 2, 3] and not results
    assert node.inflight == 0 and not node.ready


def test_unexpected_task_value_fails_the_jobs_with_a_ppft_error():
    node, results, lost = _node()
    assert node._submit([_Task(1)])
    (key,) = node._inflight
    node._finished(key, "not a list")
    ((job_id, result, _),) = results
    assert (job_id, result.ok, result.error_type) == (1, False, "ppft_protocol.errors.PPFTError")
    assert "could not run the job" in result.error_message and not lost


def test_dask_runner_keeps_bodies_within_its_budget_and_rebuilds_a_forgotten_one(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A dask worker process serves every client of the cluster: its bodies and namespaces stay within a
    budget (least recently used forgotten first); every batch carries its bodies, so a forgotten one is
    simply built again."""
    monkeypatch.setattr(dask_runner, "_BUDGET", 40_000)
    for name in ("_bodies", "_ready", "_broken", "_costs", "_in_use"):
        monkeypatch.setattr(dask_runner, name, {})
    monkeypatch.setattr(dask_runner, "_total", [0])
    bodies = [
        _hand_made(
            f"c{i}",
            f"def c{i}():\n    global n\n    n = globals().get('n', 0) + 1\n    return n\n# {'z' * 5000}\n",
        )
        for i in range(40)
    ]
    args = pickle.dumps((), 5)

    def call(body: FunctionBody) -> object:
        (fields,) = dask_runner.run_batch((_body_tuple(body),), ((1, body.digest, args, 5),))
        result = Result(*fields)
        assert result.ok, result.error_message
        return pickle.loads(result.value)

    assert [call(b) for b in bodies] == [1] * 40
    assert len(dask_runner._ready) == len(dask_runner._costs) <= 40_000 // 9000 + 1
    assert dask_runner._total[0] <= 40_000 and dask_runner._in_use == {}
    assert call(bodies[-1]) == 2  # still held
    assert call(bodies[0]) == 1  # forgotten, then built again from the batch's body
