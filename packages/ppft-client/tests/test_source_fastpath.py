"""The fast way to a function's source: cut from the file's lines by indentation, never tokenized.

`blocks.cut_source` must return exactly what `inspect.getsource` returns, or give up (None); and
`function_source` must decide as it would with inspect's text alone: the cut only saves time.
"""

from __future__ import annotations

import importlib.util
import inspect
import linecache
import sys
import types
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from ppft_client.shipping import blocks, sources
from ppft_client.shipping.blocks import cut_source
from ppft_client.shipping.functions import function_body
from ppft_client.shipping.sources import function_source

CORPUS = '''\
import functools
import os
from math import pi

alias = os.path


def plain(x):
    return x + 1


def deco(func):
    return func


def tagged(*args, **kwargs):
    return deco


@deco
def decorated(x):
    return x


@tagged(
    "a",
    key=1,
)
@deco
def decorated_twice(x):
    return x


def nested_indentation(xs):
    total = 0
    for x in xs:
        if x:
            while x > 0:
                x -= 1
                total += 1
        else:
            total -= 1
    return total


def one_liner(x): return x * 2


def one_liner_with_comment(x): return x  # trailing words
# a comment block
# at column 0


def followed_by_comments(x):
    y = x + 1
    return y
    # an indented comment: inspect keeps it
# a comment at column 0

    # indented again, after a column-0 one: inspect keeps both
def next_definition(x):
    return x


class Shapes:
    def method(self, x):
        return x

    @staticmethod
    def static(x):
        return x

    def one(self): return 1

    async def coroutine_method(self):
        return 1

    def last(self):
        return 2
    # the class goes on


async def coroutine(x):
    return x


def multiline_defaults(
    a,
    b=(1,
2),
    *,
    c="x",
):
    return a, b, c


def docstring_with_def(x):
    """A docstring.
def not_a_function(y):
    return y
"""
    return x


def backslash(x):
    y = x + \\
1
    return y


def strings(x):
    s = 'a#b' + "c'd" + \'\'\'e
f\'\'\' + r"\\"" + f"{x}" + f'{x!r:>{5}}' + "{" + f"{{" + 'it\\'s'
    return s, """
    closing at column 0
"""


def brackets(x):
    return [
1, 2,
    ] + [x]


def with_inner(x):
    def inner(y):
        return y

    return inner(x)


def with_lambda_in_body(x):
    return (lambda y: y)(x)


def with_lambda_default(x, f=lambda y: y):
    return f(x)


def string_continued_by_backslash(x):
    return "a\\
b" + x


def uses_math_attribute(x):
    return os.path.join(x, "y")


def uses_imported_constant():
    return pi.hex()


def uses_alias(p):
    return alias.join(p, "x")


def at_the_end(x):
    return x
'''

TABS = "def tabbed(x):\n\tif x:\n\t\treturn x\n\treturn 0\n"

PY312 = """\
def nested_quotes(d):
    return f"{d["k"]}" + f"{'}'}"


def after_nested_quotes(x):
    return x
"""

CUT = [
    "plain",
    "decorated",
    "decorated_twice",
    "nested_indentation",
    "one_liner",
    "one_liner_with_comment",
    "followed_by_comments",
    "next_definition",
    "Shapes.method",
    "Shapes.static",
    "Shapes.one",
    "Shapes.coroutine_method",
    "Shapes.last",
    "coroutine",
    "multiline_defaults",
    "docstring_with_def",
    "backslash",
    "strings",
    "brackets",
    "with_inner",
    "with_inner.<locals>.inner",
    "with_lambda_in_body",
    "uses_math_attribute",
    "at_the_end",
]
GIVE_UP = ["with_lambda_default", "string_continued_by_backslash"]


def _load(name: str, text: str, directory: Any) -> types.ModuleType:
    path = directory / f"{name}.py"
    path.write_text(text)
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # inspect finds a function's module there
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[types.ModuleType]:
    directory = tmp_path_factory.mktemp("corpus")
    yield _load("ppft_cut_corpus", CORPUS, directory)
    sys.modules.pop("ppft_cut_corpus", None)


def _function(module: types.ModuleType, qualname: str) -> types.FunctionType:
    if qualname == "with_inner.<locals>.inner":
        outer = module.with_inner
        code = next(c for c in outer.__code__.co_consts if isinstance(c, types.CodeType))
        return types.FunctionType(code, outer.__globals__)
    obj: Any = module
    for part in qualname.split("."):
        obj = inspect.getattr_static(obj, part)
    return obj.__func__ if isinstance(obj, staticmethod) else obj


def _without_cut(monkeypatch: pytest.MonkeyPatch, func: Callable[[], Any]) -> Any:
    """What `func()` gives when the fast path always gives up: the reference decision, inspect's."""
    with monkeypatch.context() as patch:
        patch.setattr(sources, "cut_source", lambda f: None)
        return func()


def _inspect_must_not_run(monkeypatch: pytest.MonkeyPatch) -> None:
    def fail(obj: object) -> str:
        raise AssertionError(f"inspect.getsource({obj!r}) called")

    monkeypatch.setattr(sources.inspect, "getsource", fail)


@pytest.mark.parametrize("qualname", CUT)
def test_cut_is_exactly_inspects_source(corpus, qualname):
    func = _function(corpus, qualname)
    assert cut_source(func) == inspect.getsource(func)


@pytest.mark.parametrize("qualname", GIVE_UP)
def test_cut_gives_up_on_unusual_shapes(corpus, qualname):
    assert cut_source(_function(corpus, qualname)) is None


def test_cut_gives_up_on_tab_indentation(tmp_path):
    module = _load("ppft_cut_tabs", TABS, tmp_path)
    try:
        assert cut_source(module.tabbed) is None
    finally:
        sys.modules.pop("ppft_cut_tabs", None)


@pytest.mark.skipif(sys.version_info < (3, 12), reason="f-strings nest their own quotes from 3.12")
def test_cut_of_fstrings_nesting_their_own_quotes_is_right_or_gives_up(tmp_path):
    module = _load("ppft_cut_py312", PY312, tmp_path)
    try:
        for func in (module.nested_quotes, module.after_nested_quotes):
            assert cut_source(func) in (None, inspect.getsource(func))
    finally:
        sys.modules.pop("ppft_cut_py312", None)


def test_cut_of_a_last_line_without_newline_is_inspects(monkeypatch):
    filename = "<ppft cut no newline>"
    text = "def f(x):\n    return x"
    monkeypatch.setitem(linecache.cache, filename, (len(text), None, text.splitlines(True), filename))
    namespace: dict[str, Any] = {"__name__": "ppft_cut_no_newline"}
    exec(compile(text, filename, "exec"), namespace)
    assert cut_source(namespace["f"]) == inspect.getsource(namespace["f"]) == text


@pytest.mark.parametrize("qualname", [*CUT, *GIVE_UP, "uses_imported_constant", "uses_alias"])
def test_function_source_decides_as_with_inspects_text(corpus, monkeypatch, qualname):
    func = _function(corpus, qualname)
    assert function_source(func) == _without_cut(monkeypatch, lambda: function_source(func))


def test_tabbed_function_source_is_as_with_inspects_text(tmp_path, monkeypatch):
    module = _load("ppft_cut_tabs2", TABS, tmp_path)
    try:
        found = function_source(module.tabbed)
        assert found is not None and found.text == TABS
        assert found == _without_cut(monkeypatch, lambda: function_source(module.tabbed))
    finally:
        sys.modules.pop("ppft_cut_tabs2", None)


def test_plain_function_source_never_runs_inspect(corpus, monkeypatch):
    _inspect_must_not_run(monkeypatch)
    found = function_source(corpus.plain)
    assert found is not None and found.text == "def plain(x):\n    return x + 1\n"


def test_decorated_function_is_refused_without_running_inspect(corpus, monkeypatch):
    _inspect_must_not_run(monkeypatch)
    assert function_source(corpus.decorated) is None


def test_module_attribute_call_verifies_without_parsing_the_whole_file(corpus, monkeypatch):
    def fail(*args: object) -> frozenset[str]:
        raise AssertionError("the whole file was parsed")

    monkeypatch.setattr(sources, "_imported_names", fail)
    found = function_source(corpus.uses_math_attribute)
    assert found is not None and "os.path.join" in found.text


def test_attribute_call_on_an_imported_constant_verifies(corpus):
    found = function_source(corpus.uses_imported_constant)
    assert found is not None and "pi.hex()" in found.text


def test_attribute_call_on_a_module_alias_that_was_not_imported_verifies(corpus):
    found = function_source(corpus.uses_alias)
    assert found is not None and "alias.join" in found.text


@pytest.mark.parametrize("cut", ["header only", "into the next definition", "the rest of the file"])
def test_a_wrong_cut_falls_back_to_inspects_source(corpus, monkeypatch, cut):
    func = corpus.nested_indentation
    expected = _without_cut(monkeypatch, lambda: function_source(func))
    assert expected is not None
    right = blocks._block_end

    def wrong(lines: list[str], start: int, name: str) -> int | None:
        end = right(lines, start, name)
        assert end is not None
        assert lines[end + 2].startswith("def one_liner")
        return {
            "header only": start + 1,
            "into the next definition": end + 3,
            "the rest of the file": len(lines),
        }[cut]

    monkeypatch.setattr(blocks, "_block_end", wrong)
    assert function_source(func) == expected


def test_stale_lines_still_ship_the_function_pickled(monkeypatch):
    filename = "<ppft cut stale>"
    namespace: dict[str, Any] = {"__name__": "ppft_cut_stale"}
    exec(compile("def work(x):\n    return x + 1\n", filename, "exec"), namespace)
    stale = ["def work(x):\n", "    return x - 1\n"]
    monkeypatch.setitem(linecache.cache, filename, (30, None, stale, filename))
    assert cut_source(namespace["work"]) == "".join(stale)
    assert function_source(namespace["work"]) is None
    assert function_body(namespace["work"]).sources == ()


# -- end to end -----------------------------------------------------------------------------------------


def shaped(
    x,
    scale=3,
):
    """Multiplies; this docstring holds a definition at column 0.
    def not_this(y):
        return y
    """
    return sum(x * scale for _ in range(1))


def test_function_of_a_test_module_ships_its_cut_source_and_runs(make_server):
    body = function_body(shaped)
    assert body.sources == (inspect.getsource(shaped),)
    assert body.pickled == b""
    server = make_server(1)
    assert server.submit(shaped, (14,))() == 42
