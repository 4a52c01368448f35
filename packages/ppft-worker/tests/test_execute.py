"""How a worker runs jobs (`ppft_worker.process.execute.JobRunner`): pure, in-process, bodies written by
hand."""

from __future__ import annotations

import math
import os
import pickle
import sys
import time
import types

import dill
import pytest

from ppft_protocol import FunctionBody, Job, function_digest
from ppft_worker.errors import JobSetupError, UnpicklableResultError
from ppft_worker.process.execute import JobRunner


def make_body(name: str, sources: tuple[str, ...] = (), imports: tuple[str, ...] = (), pickled: bytes = b""):
    digest = function_digest(name, sources, imports, pickled)
    return FunctionBody(digest, name, sources, imports, pickled)


def run(runner: JobRunner, body: FunctionBody, *args, job_id: int = 1, protocol: int = 5):
    if not runner.has_body(body.digest):
        runner.add_body(body)
    return runner.run(Job(job_id, body.digest, pickle.dumps(args, protocol), protocol))


def value(result):
    assert result.ok, result.error_message
    return pickle.loads(result.value)


@pytest.fixture
def runner() -> JobRunner:
    return JobRunner()


# -- running --------------------------------------------------------------------------------------------


def test_source_function_runs(runner):
    assert value(run(runner, make_body("f", ("def f(x, y):\n    return x * y\n",)), 6, 7)) == 42


def test_depfunc_sources_run_before_the_function(runner):
    body = make_body("f", ("def helper(x):\n    return x + 1\n", "def f(x):\n    return helper(x) * 2\n"))
    assert value(run(runner, body, 1)) == 4


def test_bare_dotted_aliased_and_line_imports_are_all_run(runner):
    body = make_body(
        "f",
        ("def f():\n    return math.floor(2.5), os.path.basename('a/b'), c.OrderedDict, p.join('a', 'b')\n",),
        ("math", "os.path", "collections as c", "from os import path as p"),
    )
    floor, base, ordered, joined = value(run(runner, body))
    assert (floor, base, ordered.__name__, joined) == (2, "b", "OrderedDict", "a/b")


def test_pickled_builtin_runs(runner):
    assert value(run(runner, make_body("math.sin", pickled=pickle.dumps(math.sin)), math.pi / 2)) == 1.0


def test_pickled_callable_sees_the_imports_and_depfuncs(runner):
    code = compile("lambda x: helper(math.floor(x))", "<test>", "eval").co_consts[0]
    func = types.FunctionType(code, {"__name__": "__main__"})
    body = make_body(
        "<lambda>", ("def helper(x):\n    return x * 10\n",), ("math",), dill.dumps(func, recurse=True)
    )
    assert value(run(runner, body, 2.7)) == 20


def test_pickled_depfuncs_dict_enters_the_namespace(runner):
    body = make_body(
        "f", ("def f(x):\n    return floor(x) + 1\n",), pickled=pickle.dumps((None, {"floor": math.floor}))
    )
    assert value(run(runner, body, 2.5)) == 3


def test_two_functions_with_the_same_name_never_see_each_others_definitions(runner):
    first = make_body("f", ("def helper():\n    return 1\n", "def f():\n    return helper()\n"))
    second = make_body("f", ("def f():\n    return helper()\n",))
    assert value(run(runner, first)) == 1
    result = run(runner, second)
    assert (result.ok, result.error_type) == (False, "builtins.NameError")
    assert "helper" in result.error_message


def test_job_runs_with_its_namespace_as_main(runner):
    body = make_body(
        "f", ("def f():\n    import sys\n    return sys.modules['__main__'].__dict__ is globals()\n",)
    )
    assert value(run(runner, body)) is True


def test_main_module_stdout_and_stderr_are_restored_after_a_job(runner):
    before = (sys.modules["__main__"], sys.stdout, sys.stderr)
    run(runner, make_body("f", ("def f():\n    print('x')\n",)))
    run(runner, make_body("g", ("def g():\n    raise ValueError\n",)))
    assert (sys.modules["__main__"], sys.stdout, sys.stderr) == before


def test_class_from_a_source_pickles_by_reference_as_main(runner, monkeypatch):
    source = "class Point:\n    def __init__(self, x):\n        self.x = x\n"
    body = make_body("f", (source, "def f(x):\n    return Point(x)\n"))
    result = run(runner, body, 3)
    assert result.ok
    assert b"__main__" in result.value and b"dill" not in result.value
    caller_main = types.ModuleType("__main__")  # the caller's own __main__.Point is what it resolves to
    exec(source, caller_main.__dict__)
    monkeypatch.setitem(sys.modules, "__main__", caller_main)
    point = pickle.loads(result.value)
    assert (type(point) is caller_main.Point, point.x) == (True, 3)


def test_arguments_may_arrive_as_a_memoryview(runner):
    body = make_body("f", ("def f(x):\n    return x + 1\n",))
    runner.add_body(body)
    result = runner.run(Job(9, body.digest, memoryview(pickle.dumps((41,))), 5))
    assert (result.job_id, value(result)) == (9, 42)


def test_value_is_pickled_with_the_jobs_protocol(runner):
    result = run(runner, make_body("f", ("def f():\n    return 1\n",)), protocol=2)
    assert result.value[:2] == b"\x80\x02"


def test_wall_and_cpu_time_of_the_call_are_measured(runner):
    source = (
        "def f(seconds):\n"
        "    import time\n"
        "    end = time.process_time() + seconds\n"
        "    while time.process_time() < end:\n"
        "        pass\n"
    )
    body = make_body("f", (source,))
    result = run(runner, body, 0.03)
    assert result.wall_time >= 0.03
    assert 0.025 <= result.cpu_time <= result.wall_time + 0.01


def test_os_and_sys_are_there_without_modules_as_in_ppft(runner):
    body = make_body("f", ("def f():\n    return os.getpid(), sys.maxsize\n",))
    assert value(run(runner, body)) == (os.getpid(), sys.maxsize)


def test_has_body_knows_added_digests(runner):
    body = make_body("f", ("def f():\n    pass\n",))
    assert not runner.has_body(body.digest)
    runner.add_body(body)
    assert runner.has_body(body.digest)


# -- output ---------------------------------------------------------------------------------------------


def test_stdout_and_stderr_are_captured_together_in_order(runner):
    source = (
        "import sys\n"
        "def f():\n"
        "    print('one')\n"
        "    print('two', file=sys.stderr)\n"
        "    sys.stdout.write('three\\n')\n"
    )
    assert run(runner, make_body("f", (source,))).output == "one\ntwo\nthree\n"


def test_output_does_not_carry_over_to_the_next_job(runner):
    body = make_body("f", ("def f(text):\n    print(text, end='')\n",))
    assert [run(runner, body, t).output for t in ("abc", "", "d")] == ["abc", "", "d"]


def test_output_of_a_failing_job_is_kept(runner):
    result = run(runner, make_body("f", ("def f():\n    print('before')\n    raise KeyError('k')\n",)))
    assert (result.ok, result.output) == (False, "before\n")


def test_job_closing_stdout_does_not_break_the_runner(runner):
    run(runner, make_body("f", ("import sys\ndef f():\n    sys.stdout.close()\n",)))
    assert run(runner, make_body("g", ("def g():\n    print('fine')\n",))).output == "fine\n"


# -- failures of the job --------------------------------------------------------------------------------


def test_exception_is_described_with_type_message_and_remote_traceback(runner):
    body = make_body(
        "compute",
        ("def compute(x):\n    return inner(x)\n", "def inner(x):\n    raise ValueError(f'bad {x}')\n"),
    )
    result = run(runner, body, 7)
    assert (result.ok, result.error_type, result.error_message) == (False, "builtins.ValueError", "bad 7")
    assert "in compute" in result.traceback and "in inner" in result.traceback
    assert "raise ValueError(f'bad {x}')" in result.traceback  # the shipped source lines are shown
    assert "execute.py" not in result.traceback
    exc = pickle.loads(result.exception)
    assert (type(exc), exc.args) == (ValueError, ("bad 7",))


@pytest.mark.parametrize("exc_type", ["SystemExit", "KeyboardInterrupt"])
def test_system_exit_and_keyboard_interrupt_are_job_results(runner, exc_type):
    result = run(runner, make_body("f", (f"def f():\n    raise {exc_type}(3)\n",)))
    assert (result.ok, result.error_type, result.error_message) == (False, f"builtins.{exc_type}", "3")


def test_exception_whose_init_takes_other_arguments_loads_without_calling_it(runner, monkeypatch):
    source = (
        "class Odd(Exception):\n    def __init__(self, a, b):\n        super().__init__(f'{a}-{b}')\n"
        "        self.a = a\n"
    )
    result = run(runner, make_body("f", (source, "def f():\n    raise Odd(1, 2)\n")))
    assert (result.error_type, result.error_message) == ("__main__.Odd", "1-2")
    assert "Odd: 1-2" in result.traceback

    class Odd(Exception):  # the caller's own class of that name, in the caller's __main__
        def __init__(self, a: int, b: int) -> None:
            raise AssertionError("__init__ must not be called: it takes other arguments than args")

    caller_main = types.ModuleType("__main__")
    caller_main.Odd = Odd  # type: ignore[attr-defined]
    Odd.__qualname__ = "Odd"
    monkeypatch.setitem(sys.modules, "__main__", caller_main)
    exc = pickle.loads(result.exception)  # a plain pickle: any client loads it
    assert (type(exc), exc.args, exc.a) == (Odd, ("1-2",), 1)


def test_unpicklable_value_is_an_error_result_saying_why(runner):
    result = run(runner, make_body("gen", ("def gen():\n    return (i for i in range(3))\n",)))
    assert (result.ok, result.error_type) == (False, "ppft_worker.errors.UnpicklableResultError")
    assert "of type builtins.generator, could not be pickled" in result.error_message
    assert isinstance(pickle.loads(result.exception), UnpicklableResultError)


def test_value_the_stdlib_cannot_pickle_falls_back_to_dill(runner):
    result = run(runner, make_body("f", ("def f():\n    return lambda x: x * 2\n",)))
    assert dill.loads(result.value)(4) == 8


# -- failures to set a job up ---------------------------------------------------------------------------


def setup_error(result) -> str:
    assert (result.ok, result.error_type) == (False, "ppft_worker.errors.JobSetupError")
    assert isinstance(pickle.loads(result.exception), JobSetupError)
    return result.error_message


def test_unknown_digest_is_an_error_result(runner):
    result = runner.run(Job(5, b"\x01" * 32, pickle.dumps(()), 5))
    assert result.job_id == 5
    assert "unknown to this worker" in setup_error(result)


def test_missing_module_says_it_is_not_installed(runner):
    result = run(runner, make_body("f", ("def f():\n    pass\n",), ("ppft_no_such_module",)))
    message = setup_error(result)
    assert "module 'ppft_no_such_module' listed in modules= ('ppft_no_such_module')" in message
    assert "is not installed on this worker" in message


def test_modules_entry_that_is_not_an_import_is_explained(runner):
    result = run(runner, make_body("f", ("def f():\n    pass\n",), ("not a module!",)))
    assert "is neither a module name nor an import line" in setup_error(result)


def test_source_that_does_not_compile_is_explained(runner):
    result = run(runner, make_body("f", ("def f(:\n    pass\n",)))
    assert "f's source 1 (f) does not compile on this worker" in setup_error(result)


def test_source_that_fails_at_definition_names_what_is_missing(runner):
    result = run(runner, make_body("f", ("class B(MissingBase):\n    pass\n", "def f():\n    pass\n")))
    message = setup_error(result)
    assert "executing f's source 1 (B) failed" in message and "MissingBase" in message


def test_arguments_that_do_not_unpickle_are_explained(runner, monkeypatch):
    module = types.ModuleType("ppft_test_vanishing")
    exec("class Gone:\n    pass\n", module.__dict__)
    monkeypatch.setitem(sys.modules, "ppft_test_vanishing", module)
    args = pickle.dumps((module.Gone(),))
    monkeypatch.delitem(sys.modules, "ppft_test_vanishing")
    body = make_body("f", ("def f(x):\n    return x\n",))
    runner.add_body(body)
    message = setup_error(runner.run(Job(1, body.digest, args, 5)))
    assert "the arguments of job 1 (function f) cannot be unpickled on this worker" in message


def test_broken_body_keeps_failing_without_breaking_others(runner):
    broken = make_body("f", ("def f():\n    pass\n",), ("ppft_no_such_module",))
    good = make_body("g", ("def g():\n    return 'ok'\n",))
    assert not run(runner, broken).ok
    assert value(run(runner, good)) == "ok"
    assert not run(runner, broken).ok


# -- speed ----------------------------------------------------------------------------------------------


def test_tiny_jobs_cost_microseconds(runner):
    body = make_body("f", ("def f(x):\n    return x + 1\n",))
    job = Job(1, body.digest, pickle.dumps((1,)), 5)
    runner.add_body(body)
    runner.run(job)
    start = time.perf_counter()
    for _ in range(20_000):
        runner.run(job)
    assert time.perf_counter() - start < 2.0  # about 0.05 s on this machine: a 40x margin for loaded CI
