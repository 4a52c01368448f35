"""How the client captures a job's function (`ppft_client.shipping.functions`): pure, in-process, no
workers."""

from __future__ import annotations

import functools
import hashlib
import json
import linecache
import math
import os
import os.path as osp
import pickle
import sys
import types
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from ppft_client.shipping.functions import (
    ShippingError,
    function_body,
    unpickle,
)


def add_one(x):
    return x + 1


def square(x):
    return x * x


def unused_helper(x):
    return x


def uses_globals(x):
    return square(math.floor(x)) + len(osp.basename("dir/abc"))


def calls_square(x):
    return square(x) + 1


def uses_calls_square(x):
    return calls_square(x) * 2


def with_defaults(x, n=2, *, scale=1.5, name="a"):
    return (x + n) * scale


def with_annotations(x: SomeUnknownType) -> AnotherUnknownType:  # type: ignore[name-defined] # noqa: F821
    return x


def with_computed_default(x, n=math.pi):
    return x + n


def _identity_decorator(func):
    return func


@_identity_decorator
def decorated(x):
    return x + 2


class Base:
    def twice(self):
        return 2 * self.value()


class Child(Base):
    def value(self):
        return 21


class Patched:
    def value(self):
        return 1


Patched.extra = lambda self: 2  # type: ignore[attr-defined]


class Counter:
    def __init__(self, start):
        self.start = start

    def add(self, x):
        return self.start + x


@pytest.fixture
def define() -> Iterator[Callable[..., Any]]:
    """Define functions from source text registered in linecache, as a REPL or notebook cell would."""
    filenames: list[str] = []

    def _define(source: str, name: str, **extra_globals: Any) -> Any:
        filename = f"<ppft-test {len(filenames)} {id(filenames)}>"
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


@pytest.fixture
def script_main(tmp_path, monkeypatch) -> Callable[[str], types.ModuleType]:
    """Make `sys.modules["__main__"]` a script whose file holds `source`: what a user's script is."""

    def _make(source: str) -> types.ModuleType:
        path = tmp_path / "user_script.py"
        path.write_text(source)
        module = types.ModuleType("__main__")
        module.__file__ = str(path)
        monkeypatch.setitem(sys.modules, "__main__", module)
        exec(compile(source, str(path), "exec"), module.__dict__)
        return module

    return _make


SCRIPT = """\
import math
import os


class Base:
    def twice(self):
        return 2 * self.value()


class Child(Base):
    def value(self):
        return 21


def square(x):
    return x * x


def calls_square(x):
    return square(x) + math.floor(0.5)


def top(x):
    return calls_square(x) * Child().twice()
"""


def load(body):
    return unpickle(body.pickled)


# -- sources --------------------------------------------------------------------------------------------


def test_top_level_function_ships_its_source():
    body = function_body(add_one)
    assert body.name == "add_one"
    assert body.sources == ("def add_one(x):\n    return x + 1\n",)
    assert body.pickled == b""


def test_depfunc_sources_come_before_the_function():
    body = function_body(calls_square, (square,), ("math",))
    assert body.sources == (
        "def square(x):\n    return x * x\n",
        "def calls_square(x):\n    return square(x) + 1\n",
    )
    assert body.imports == ("math",)


def test_modules_go_into_imports_verbatim():
    modules = ("math", "os.path", "numpy as np", "from os import path", "import json as j")
    assert function_body(add_one, (), modules).imports == modules


def test_literal_defaults_keep_the_source():
    body = function_body(with_defaults)
    assert body.pickled == b""
    assert body.sources[-1].startswith("def with_defaults(x, n=2, *, scale=1.5")


def test_computed_default_is_pickled_with_its_value():
    body = function_body(with_computed_default)
    assert body.sources == ()
    assert load(body)(1) == 1 + math.pi


def test_annotations_are_never_evaluated_on_the_worker():
    body = function_body(with_annotations)
    assert body.sources[-1].startswith("from __future__ import annotations\ndef with_annotations(")
    assert body.pickled == b""


def test_decorated_function_is_pickled():
    body = function_body(decorated)
    assert body.sources == ()
    assert load(body)(1) == 3


def test_stale_source_falls_back_to_pickle(define):
    func = define("def work(x):\n    return x + 1\n", "work")
    linecache.cache[func.filename] = (30, None, ["def work(x):\n", "    return x - 1\n"], func.filename)
    body = function_body(func)
    assert body.sources == ()
    assert load(body)(10) == 11


def test_source_of_a_fresh_definition_is_verified_and_shipped(define):
    func = define("def work(x):\n    return x + 1\n", "work")
    assert function_body(func).sources == ("def work(x):\n    return x + 1\n",)


def test_source_using_an_imported_module_attribute_verifies():
    # `math.floor(...)` compiles differently when `math` is imported in the same file: still verified
    body = function_body(uses_globals)
    assert body.pickled == b""
    assert "math.floor" in body.sources[-1]


def test_class_depfunc_of_the_script_ships_its_base_first(script_main):
    main = script_main(SCRIPT)
    body = function_body(main.square, (main.Child,))
    assert [s.split("(")[0].split(":")[0] for s in body.sources] == [
        "class Base",
        "class Child",
        "def square",
    ]


def test_importable_class_depfunc_travels_by_reference():
    body = function_body(add_one, (Child,))
    assert body.sources == ("def add_one(x):\n    return x + 1\n",)
    assert load(body) == (None, {"Child": Child})


def test_class_with_a_method_added_later_is_pickled():
    body = function_body(add_one, (Patched,))
    assert [s.split("(")[0] for s in body.sources] == ["def add_one"]
    main, extras = load(body)
    assert main is None
    assert extras["Patched"]().extra() == 2


# -- pickled callables ----------------------------------------------------------------------------------


def test_lambda_is_pickled():
    body = function_body(lambda x: x * 3)
    assert body.sources == ()
    assert "<lambda>" in body.name
    assert load(body)(2) == 6


def test_closure_is_pickled_with_its_cell():
    def make(k):
        return lambda x: x + k

    body = function_body(make(5))
    assert load(body)(1) == 6


def test_reused_lambda_name_ships_each_own_code():
    f = lambda x: x + 1  # noqa: E731
    g = f
    f = lambda x: x * 2  # noqa: E731
    body_g, body_f = function_body(g), function_body(f)
    assert body_g.digest != body_f.digest
    assert (load(body_g)(10), load(body_f)(10)) == (11, 20)


def test_builtins_pickle_by_reference_without_dill():
    for func in (math.sin, min, sum):
        body = function_body(func)
        assert body.pickled == pickle.dumps(func, 5)
        assert body.sources == ()
    assert function_body(math.sin).name == "math.sin"


def test_bound_method_travels_with_its_instance():
    body = function_body(Counter(40).add)
    assert load(body)(2) == 42


def test_bound_method_is_rebuilt_after_its_instance_changes():
    counter = Counter(1)
    first = function_body(counter.add)
    counter.start = 2
    second = function_body(counter.add)
    assert first.digest != second.digest
    assert load(second)(0) == 2


def test_partial_is_pickled():
    body = function_body(functools.partial(pow, 2))
    assert body.name == "partial(builtins.pow)"
    assert load(body)(10) == 1024


def test_depfunc_without_source_goes_into_the_pickled_dict():
    twice = lambda x: 2 * x  # noqa: E731
    body = function_body(calls_square, (square, math.floor, twice))
    main, extras = load(body)
    assert main is None
    assert (extras["floor"], extras["<lambda>"](4)) == (math.floor, 8)
    assert body.sources[0].startswith("def square")


def test_depfunc_without_source_gets_the_name_the_function_uses():
    helper = lambda x: x + 100  # noqa: E731
    namespace = {"__name__": "ppft_test_not_importable", "helper": helper}
    func = eval("lambda x: helper(x)", namespace)
    body = function_body(func, (helper,))
    _, extras = load(body)
    assert list(extras) == ["helper"]


def test_unpicklable_function_raises_shipping_error():
    def make():
        gen = (i for i in range(3))
        return lambda: next(gen)

    with pytest.raises(ShippingError, match="cannot be sent to a worker"):
        function_body(make())


def test_non_callable_func_is_a_type_error():
    with pytest.raises(TypeError, match="func argument must be"):
        function_body(42)  # type: ignore[arg-type]


# -- globals= -------------------------------------------------------------------------------------------


def test_globals_import_only_the_used_modules_and_functions():
    body = function_body(uses_globals, globals=globals())
    assert body.imports == ("math", "import posixpath as osp")
    assert [s.split("(")[0] for s in body.sources] == ["def uses_globals"]
    assert load(body) == (None, {"square": square})  # importable from this module: by reference
    assert json and unused_helper  # in this module's globals, unused by the function, so not shipped


def test_globals_ship_the_scripts_functions_and_classes_as_source_transitively(script_main):
    main = script_main(SCRIPT)
    body = function_body(main.top, globals=vars(main))
    names = [s.split("(")[0].split(":")[0] for s in body.sources]
    assert names == ["def calls_square", "class Base", "class Child", "def square", "def top"]
    assert body.imports == ("math",)
    assert body.pickled == b""


def test_globals_library_function_travels_by_reference_not_as_source():
    namespace = {"__name__": "ppft_test_not_importable", "join": osp.join}
    func = eval("lambda a, b: join(a, b)", namespace)
    _, extras = load(function_body(func, globals=namespace))
    assert extras == {"join": osp.join}


def test_globals_alias_of_a_module_becomes_an_import_as_line():
    namespace = {"__name__": "ppft_test_not_importable", "j": json}
    func = eval("lambda: j.dumps(1)", namespace)
    assert function_body(func, globals=namespace).imports == ("import json as j",)


def test_globals_submodule_used_through_its_package_is_imported():
    import xml.etree.ElementTree

    namespace = {"__name__": "ppft_test_not_importable", "xml": sys.modules["xml"]}
    func = eval("lambda s: xml.etree.ElementTree.fromstring(s)", namespace)
    imports = function_body(func, globals=namespace).imports
    assert imports[0] == "xml"
    assert "xml.etree" in imports
    assert "xml.etree.ElementTree" in imports
    assert xml.etree.ElementTree


# -- the cache ------------------------------------------------------------------------------------------


def test_cache_hit_returns_the_same_body():
    assert function_body(add_one) is function_body(add_one)
    assert function_body(uses_globals, globals=globals()) is function_body(uses_globals, globals=globals())


def test_lambdas_made_anew_from_the_same_code_share_one_cached_body():
    bodies = [function_body(lambda x: x + 1) for _ in range(3)]
    assert bodies[0] is bodies[1] is bodies[2]


def test_cache_rebuilds_when_a_used_global_is_rebound():
    namespace: dict[str, Any] = {"__name__": "ppft_test_not_importable", "helper": square}
    func = eval("lambda x: helper(x)", namespace)
    first = function_body(func, globals=namespace)
    namespace["helper"] = add_one
    second = function_body(func, globals=namespace)
    assert first.digest != second.digest
    assert function_body(func, globals=namespace) is second


def test_cache_rebuilds_when_a_constant_shipped_with_a_pickled_function_is_rebound():
    namespace: dict[str, Any] = {"__name__": "__main__", "scale": 2}
    func = eval("lambda x: x * scale", namespace)
    first = function_body(func)
    assert load(first)[1] == {"scale": 2}  # (the lambda, constants it reads), the lambda without globals
    namespace["scale"] = 3
    second = function_body(func)
    assert load(second)[1] == {"scale": 3}
    assert first.digest != second.digest


def test_cache_rebuilds_when_a_closure_cell_is_rebound():
    scale = 2
    func = lambda x: x * scale  # noqa: E731
    assert load(function_body(func))(5) == 10
    scale = 4
    assert load(function_body(func))(5) == 20


# -- the digest -----------------------------------------------------------------------------------------


def test_digest_is_sha256_over_length_prefixed_fields():
    body = function_body(add_one, (), ("math",))
    expected = hashlib.sha256(b"ppft-function-body-v1\x00")
    expected.update(len(b"add_one").to_bytes(4, "big") + b"add_one")
    expected.update((1).to_bytes(4, "big"))
    src = body.sources[0].encode()
    expected.update(len(src).to_bytes(8, "big") + src)
    expected.update((1).to_bytes(4, "big") + (4).to_bytes(8, "big") + b"math")
    expected.update((0).to_bytes(8, "big"))
    assert body.digest == expected.digest()


def test_digest_changes_with_the_modules():
    assert function_body(add_one, (), ("math",)).digest != function_body(add_one, (), ("os",)).digest


def _uses_os_without_listing_it():
    return os.getpid()


def test_modules_the_function_uses_from_its_own_module_are_imported():
    body = function_body(_uses_os_without_listing_it)
    assert "os" in body.imports
