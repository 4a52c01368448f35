"""Functions captured by the client (`ppft_client.shipping.functions`) and run by `JobRunner`, in one process.

The caller's side of each test is what `Server.submit` does: `function_body`, `pickle_args`; the worker's is
`JobRunner.run`; the caller then reads the `Result` with `unpickle`.
"""

from __future__ import annotations

import linecache
import math
import os.path as osp
import sys
import types
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from ppft_protocol import Job
from ppft_worker.process.execute import JobRunner

functions = pytest.importorskip("ppft_client.shipping.functions")


class Vector:
    """A class of this test module travelling in arguments and results (by reference: importable here)."""

    def __init__(self, x: float, y: float) -> None:
        self.x = x
        self.y = y

    def norm(self) -> float:
        return math.hypot(self.x, self.y)


class Account:
    def __init__(self, balance):
        self.balance = balance

    def deposit(self, amount):
        self.balance += amount
        return self.balance


def scaled_norm(v, k):
    return k * v.norm()


def double(x):
    return 2 * x


def sum_of_doubles(xs):
    return sum(double(x) for x in xs) + math.floor(0.5)


def uses_globals(x):
    return double(x) + len(osp.basename("a/bc"))


def unused(x):
    return x


def shout(word):
    print(word.upper())
    print("to stderr", file=__import__("sys").stderr)
    return len(word)


def fails(x):
    raise ZeroDivisionError(f"cannot divide {x}")


def returns_generator(n):
    return (i for i in range(n))


def make_vector(x, y):
    return Vector(x, y)


@pytest.fixture
def runner() -> JobRunner:
    return JobRunner()


@pytest.fixture
def define() -> Iterator[Callable[..., Any]]:
    """Define a function from source text registered in linecache, as a REPL or notebook cell would."""
    filenames: list[str] = []

    def _define(source: str, name: str, **extra_globals: Any) -> Any:
        filename = f"<ppft-roundtrip {len(filenames)} {id(filenames)}>"
        filenames.append(filename)
        linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)
        namespace = {"__name__": "ppft_test_not_importable", **extra_globals}
        exec(compile(source, filename, "exec"), namespace)
        func = namespace[name]
        func.filename = filename
        return func

    yield _define
    for filename in filenames:
        linecache.cache.pop(filename, None)


def ship(runner: JobRunner, func, args=(), depfuncs=(), modules=(), globals=None, job_id=1):
    """The whole trip: capture, send the body once, run, and read the value as the caller does."""
    body, data = functions.function_job(func, depfuncs, modules, globals, 5)
    if not runner.has_body(body.digest):
        runner.add_body(body)
    sargs = functions.pickle_args(args, 5) if data is None else data.wrap(args, 5)
    return runner.run(Job(job_id, body.digest, sargs, 5))


def value(result):
    assert result.ok, f"{result.error_type}: {result.error_message}\n{result.traceback}"
    return functions.unpickle(result.value)


def test_top_level_function_with_depfuncs_and_modules(runner):
    assert value(ship(runner, sum_of_doubles, ([1, 2, 3],), (double,), ("math",))) == 12


def test_lambda(runner):
    assert value(ship(runner, lambda x, y: x**y, (2, 10))) == 1024


def test_closure(runner):
    def make_adder(n):
        def add(x):
            return x + n

        return add

    assert value(ship(runner, make_adder(5), (1,))) == 6


def test_lambda_whose_name_was_reused_runs_its_own_code(runner):
    f = lambda x: x + 1  # noqa: E731
    g = f
    f = lambda x: x * 2  # noqa: E731
    assert (value(ship(runner, g, (10,))), value(ship(runner, f, (10,)))) == (11, 20)


def test_function_whose_source_text_is_stale_runs_its_real_code(runner, define):
    func = define("def work(x):\n    return x + 1\n", "work")
    linecache.cache[func.filename] = (30, None, ["def work(x):\n", "    return x - 1\n"], func.filename)
    assert value(ship(runner, func, (10,))) == 11


def test_bound_method_with_its_instance(runner):
    account = Account(100)
    assert value(ship(runner, account.deposit, (5,))) == 105
    assert account.balance == 100  # the worker changed its own copy


def test_bound_method_split_as_server_submit_does(runner):
    account = Account(7)
    assert value(ship(runner, Account.deposit, (account, 3))) == 10


def test_instance_of_a_test_module_class_in_args_and_result(runner):
    assert value(ship(runner, scaled_norm, (Vector(3, 4), 2))) == 10.0
    vector = value(ship(runner, make_vector, (1, 2), (Vector,)))
    assert (type(vector) is Vector, vector.x, vector.y) == (True, 1, 2)


def test_builtins_of_the_classic_example(runner):
    results = (
        ship(runner, math.sin, (math.pi / 2,), (), ("math",)),
        ship(runner, min, (3.2, 10.0, 7.5)),
        ship(runner, sum, ([1, 2, 3],)),
    )
    assert tuple(map(value, results)) == (1.0, 3.2, 6)


def test_globals_auto_import_ships_only_what_is_used(runner):
    body = functions.function_body(uses_globals, globals=globals())
    assert body.imports == ("import posixpath as osp",)
    assert [s.split("(")[0] for s in body.sources] == ["def uses_globals"]
    assert functions.unpickle(body.pickled) == (None, {"double": double})
    assert "unused" not in repr(body) and unused(1) == 1  # in globals() but not used: not shipped
    assert value(ship(runner, uses_globals, (4,), globals=globals())) == 10


SCRIPT = """\
import math


class Point:
    def __init__(self, x, y):
        self.x = x
        self.y = y

    def norm(self):
        return math.hypot(self.x, self.y)


def moved(p, dx):
    return Point(p.x + dx, p.y)


def norm_of_moved(p, dx):
    return moved(p, dx).norm()
"""


def test_scripts_class_and_functions_ship_as_source_and_come_back_as_the_callers_class(
    runner, tmp_path, monkeypatch
):
    path = tmp_path / "user_script.py"
    path.write_text(SCRIPT)
    main = types.ModuleType("__main__")
    main.__file__ = str(path)
    monkeypatch.setitem(sys.modules, "__main__", main)  # the caller is a script, as with `python script.py`
    exec(compile(SCRIPT, str(path), "exec"), main.__dict__)
    body = functions.function_body(main.moved, globals=vars(main))
    assert [s.split("(")[0].split(":")[0] for s in body.sources] == ["class Point", "def moved"]
    point = value(ship(runner, main.moved, (main.Point(1, 2), 10), globals=vars(main)))
    assert (type(point) is main.Point, point.x, point.y) == (True, 11, 2)
    assert value(ship(runner, main.norm_of_moved, (main.Point(0, 4), 3), globals=vars(main))) == 5.0


def test_scripts_instance_sent_by_value_comes_back_as_the_callers_class(runner, tmp_path, monkeypatch):
    main = types.ModuleType("__main__")
    monkeypatch.setitem(sys.modules, "__main__", main)
    exec("class Token:\n    def __init__(self, v):\n        self.v = v\n", main.__dict__)
    token = value(ship(runner, lambda t: t, (main.Token(5),)))  # no source shipped: dill by value
    assert (type(token) is main.Token, token.v) == (True, 5)


def test_annotated_function_runs_where_its_annotation_types_do_not_exist(runner, define):
    func = define("def ident(x: Thing) -> Thing:\n    return x\n", "ident", Thing=int)
    assert value(ship(runner, func, (5,))) == 5


def test_exception_arrives_with_type_message_and_traceback(runner):
    result = ship(runner, fails, (3,))
    assert (result.ok, result.error_type, result.error_message) == (
        False,
        "builtins.ZeroDivisionError",
        "cannot divide 3",
    )
    assert "in fails" in result.traceback
    assert isinstance(functions.unpickle(result.exception), ZeroDivisionError)


def test_print_output_is_captured(runner):
    result = ship(runner, shout, ("hi",))
    assert (value(result), result.output) == (2, "HI\nto stderr\n")


def test_value_that_cannot_be_pickled_is_an_error(runner):
    result = ship(runner, returns_generator, (3,))
    assert (result.ok, result.error_type) == (False, "ppft_worker.errors.UnpicklableResultError")


def test_unknown_digest(runner):
    result = runner.run(Job(1, b"\x00" * 32, functions.pickle_args((), 5), 5))
    assert (result.ok, result.error_type) == (False, "ppft_worker.errors.JobSetupError")


def test_import_of_a_missing_module(runner):
    result = ship(runner, double, (1,), (), ("ppft_module_that_does_not_exist",))
    assert "is not installed on this worker" in result.error_message


def test_two_functions_with_the_same_name_and_different_bodies_in_one_runner(runner, define):
    first = define("def work(x):\n    return x + 1\n", "work")
    second = define("def work(x):\n    return x * 100\n", "work")
    first_body = functions.function_body(first)
    second_body = functions.function_body(second)
    assert first_body.name == second_body.name == "work"
    assert first_body.sources and second_body.sources  # both shipped as (verified) source
    assert (value(ship(runner, first, (2,))), value(ship(runner, second, (2,)))) == (3, 200)
