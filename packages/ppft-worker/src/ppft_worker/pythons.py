"""Which Python runs here, and code that travels between Pythons: as bytecode where it runs, as source where
it does not, and a clear error where neither can.

A function pickled by value (a lambda, a closure, a method of a class of `__main__`: dill's way) carries its
code object, whose bytecode only the same major.minor of CPython runs: another one crashes on it or fails
with nonsense. So every pickle ppft makes with dill (function bodies, arguments, module data, results)
pickles each code object through `save_code`, as an expression that the *loading* Python evaluates:

    next(starmap(LOADER, [ {MAGIC: dill_args}.get(importlib.util.MAGIC_NUMBER, PORTABLE) ]))
    LOADER = getattr(import_module({MAGIC: "dill._dill"}.get(M, "ppft_worker.pythons")),
                     {MAGIC: "_create_code"}.get(M, "code_from_source"))

where MAGIC is the pickling Python's bytecode magic number. A Python with the same magic builds the code
from its bytecode with dill's own `_create_code`, exactly as before, so a ppft 2.0.0 peer of the same
Python loads these pickles unchanged. Any other Python takes `code_from_source` with PORTABLE: the source
of the top-level statement that defines the code (a `def`, a `class`, a line with a lambda), where it is
found (`linecache`: a file, an IPython cell) and *verified* (compiled here, it gives the same code object),
with what is needed to find the code again in it (name, first line, rank among codes of that name on that
line, free variables). The loading Python compiles that source itself, so its own bytecode runs; defaults,
closure cells and globals travel as dill already sends them. Code without a verified source (typed in
`python -c`, stdin, `exec` or a plain REPL) takes `bytecode_without_source`, which raises
`ForeignPythonError` naming both Pythons and what to do: never a crash. A code object nested in another's
constants is built from the same source when its parent is, so it only gives `None` where it is missing.

`NO_SOURCE` appears in a pickle exactly when a top-level code in it has no source: a client checks a body
for it once per body and node (`ppft_client.pythons`), a ppserver once per body and dial-in worker.

The path of this module and the names `code_from_source` and `bytecode_without_source` are written into
pickles: keep them importable as they are. This module must never import dill before a code object is
pickled, nor run any code it compiles.
"""

from __future__ import annotations
import __future__

import ast
import importlib
import importlib.util
import io
import itertools
import linecache
import sys
import types
from typing import Any

from ppft_protocol import PPFTError

__all__ = [
    "NO_SOURCE",
    "THIS_PYTHON",
    "ForeignPythonError",
    "Screen",
    "bytecode_without_source",
    "code_from_source",
    "portable_dumps",
    "portable_pickler",
    "python_line",
    "runs_bytecode_of",
    "same_code",
    "same_const",
    "save_code",
]

_IMPLEMENTATIONS = {"cpython": "CPython", "pypy": "PyPy"}


def _this_python() -> str:
    v = sys.version_info
    level = "" if v.releaselevel == "final" else f"{v.releaselevel[0]}{v.serial}"
    name = sys.implementation.name
    return f"{_IMPLEMENTATIONS.get(name, name)} {v.major}.{v.minor}.{v.micro}{level}"


THIS_PYTHON = _this_python()
"""This process's Python, as `NodeInfo.python` carries it: "CPython 3.13.0"."""

NO_SOURCE = b"bytecode_without_source"
"""Bytes found in a pickle that holds code which only its own Python runs (no source travels with it)."""


class ForeignPythonError(PPFTError):
    """Code pickled by one Python cannot run on another (its bytecode differs) and has no source to compile
    there; the message names both Pythons and what to do."""


def python_line(python: str) -> str:
    """The part of a `NodeInfo.python` that decides whether bytecode runs: "CPython 3.13" of
    "CPython 3.13.0" ("" stays "")."""
    implementation, _, version = python.partition(" ")
    return f"{implementation} {'.'.join(version.split('.')[:2])}" if version else python


def runs_bytecode_of(python: str, producer: str = THIS_PYTHON) -> bool:
    """Whether a process running `python` runs bytecode `producer` made; true when either is unknown ("":
    a ppft 2.0.0 peer, which does not say, keeps its old behaviour)."""
    return not python or not producer or python_line(python) == python_line(producer)


_NO_SOURCE_WHY = "(it was defined in python -c, stdin, exec or an interactive session)"


def _advice(producer: str) -> str:
    return (
        "define it in a file (the script or a module: then its source travels and is compiled there), or run "
        f"the workers with {python_line(producer)}"
    )


# -- loading: the loading Python's side of the expression ------------------------------------------------


_compiled: dict[tuple[str, str, int, tuple[str, ...]], types.CodeType] = {}
_COMPILED_MAX = 256


def code_from_source(
    snippet: str | None,
    filename: str,
    start: int,
    futures: tuple[str, ...],
    name: str,
    firstlineno: int,
    rank: int,
    freevars: tuple[str, ...],
    nested: bool,
    producer: str,
) -> types.CodeType | None:
    """The code object `name` (first line `firstlineno`, the `rank`-th of that name there) of `snippet`, the
    statement at line `start` of `filename`, compiled by this Python. None for a `nested` code not found
    (its parent brings its own); else `ForeignPythonError` when it cannot be found or differs."""
    if snippet is None:
        return bytecode_without_source(snippet, filename, start, futures, name, firstlineno, rank, freevars,
                                       nested, producer)  # fmt: skip
    key = (snippet, filename, start, futures)
    module = _compiled.get(key)
    if module is None:
        flags = 0
        for feature in futures:
            flags |= getattr(__future__, feature).compiler_flag
        try:
            module = compile("\n" * (start - 1) + snippet, filename, "exec", flags, dont_inherit=True)
        except SyntaxError as exc:
            if nested:
                return None
            raise ForeignPythonError(
                f"{name} (line {firstlineno} of {filename}) was pickled by value by {producer}, and its "
                f"source does not compile on {THIS_PYTHON} ({exc.msg}, line {exc.lineno}): "
                f"{_advice(producer)}"
            ) from None
        if len(_compiled) >= _COMPILED_MAX:
            del _compiled[next(iter(_compiled))]
        _compiled[key] = module
    found = [c for c in _codes(module) if c.co_name == name and c.co_firstlineno == firstlineno]
    if rank < len(found) and found[rank].co_freevars == freevars:
        return found[rank]
    if nested:
        return None
    raise ForeignPythonError(
        f"{name} (line {firstlineno} of {filename}) was pickled by value by {producer}, and its source, "
        f"compiled on {THIS_PYTHON}, does not give the same function (its closure or its place differ): "
        f"{_advice(producer)}"
    )


def bytecode_without_source(
    snippet: str | None,
    filename: str,
    start: int,
    futures: tuple[str, ...],
    name: str,
    firstlineno: int,
    rank: int,
    freevars: tuple[str, ...],
    nested: bool,
    producer: str,
) -> types.CodeType | None:
    """Code that has no source, loaded by another Python than the one that pickled it: a clear error."""
    if nested:
        return None
    where = f"line {firstlineno} of {filename}" if filename else "no file"
    raise ForeignPythonError(
        f"{name} ({where}) was pickled by value by {producer}, whose bytecode {THIS_PYTHON} cannot run, "
        f"and it has no source to compile here {_NO_SOURCE_WHY}: {_advice(producer)}"
    )


def _codes(code: types.CodeType) -> list[types.CodeType]:
    """`code` and every code object in its constants, depth first, in the order the compiler made them."""
    found = [code]
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            found.extend(_codes(const))
    return found


# -- pickling: `save_code`, for a dill Pickler's dispatch table ---------------------------------------------


class _Call:
    """Pickles as `func(*args)` (`func` itself pickled: a builtin by name, or another `_Call`)."""

    __slots__ = ("args", "func")

    def __init__(self, func: Any, *args: Any) -> None:
        self.func = func
        self.args = args

    def __reduce__(self) -> tuple[Any, ...]:
        return self.func, self.args

    def __call__(self, *args: Any) -> Any:  # pickle wants a reduce's callable to be callable
        raise TypeError("a _Call only describes a call for pickle; it is not called here")


_MAGIC = importlib.util.MAGIC_NUMBER
_LOADING_MAGIC = _Call(getattr, _Call(importlib.import_module, "importlib.util"), "MAGIC_NUMBER")


def _pick(native: object, other: object) -> _Call:
    """`native` where the loading Python has this one's magic, else `other`."""
    return _Call(_Call(getattr, {_MAGIC: native}, "get"), _LOADING_MAGIC, other)


_LOADER = _Call(
    getattr,
    _Call(importlib.import_module, _pick("dill._dill", __name__)),
    _pick("_create_code", "code_from_source"),
)
_NO_SOURCE_LOADER = _Call(
    getattr,
    _Call(importlib.import_module, _pick("dill._dill", __name__)),
    _pick("_create_code", NO_SOURCE.decode()),
)
_dill_save_code: Any = None


def save_code(pickler: Any, code: types.CodeType) -> None:
    """Pickle `code` for any Python (see the module's text): dill's own arguments for this Python, its
    verified source for the others. Installed as `dispatch[types.CodeType]` of a dill Pickler."""
    global _dill_save_code
    if _dill_save_code is None:
        import dill._dill  # noqa: PLC0415 - a dill pickler is at work: dill is loaded already

        _dill_save_code = dill._dill.save_code
    captured: list[tuple[Any, ...]] = []
    pickler.save_reduce = lambda _func, args, obj=None, **_kw: captured.append(args)
    try:
        _dill_save_code(pickler, code)
    finally:
        del pickler.save_reduce
    depth = getattr(pickler, "_ppft_code_depth", 0)
    source = _verified_source(code)
    if source is None:
        portable: tuple[Any, ...] = (None, code.co_filename, 0, (), code.co_name, code.co_firstlineno, 0,
                                     code.co_freevars, depth > 0, THIS_PYTHON)  # fmt: skip
    else:
        portable = (*source, code.co_freevars, depth > 0, THIS_PYTHON)
    loader = _NO_SOURCE_LOADER if source is None and depth == 0 else _LOADER
    pickler._ppft_code_depth = depth + 1
    try:
        pickler.save_reduce(
            next, (_Call(itertools.starmap, loader, [_pick(captured[0], portable)]),), obj=code
        )
    finally:
        pickler._ppft_code_depth = depth


# -- finding and verifying the source of a code object ----------------------------------------------------

_FUTURE_FLAGS = {
    name: getattr(__future__, name).compiler_flag
    for name in __future__.all_feature_names
    if getattr(__future__, name).compiler_flag >= 0x20000  # the CO_FUTURE_* bits; lower ones are code flags
}
_SOURCES_MAX = 1024
_sources: dict[types.CodeType, tuple[Any, ...] | None] = {}
_statements: dict[tuple[str, int, int], list[tuple[int, int]]] = {}


def _verified_source(code: types.CodeType) -> tuple[Any, ...] | None:
    """(snippet, filename, start, futures, name, firstlineno, rank) for `code`, or None: the top-level
    statement of its file that defines it, which compiled here gives a code object equal to `code`."""
    try:
        return _sources[code]
    except KeyError:
        pass
    except TypeError:  # a code object whose constants do not hash
        return None
    try:
        found = _find_source(code)
    except Exception:  # noqa: BLE001 - a file that reads or parses oddly has no usable source: that is all
        found = None
    if len(_sources) >= _SOURCES_MAX:
        del _sources[next(iter(_sources))]
    _sources[code] = found
    return found


def _find_source(code: types.CodeType) -> tuple[Any, ...] | None:
    filename = code.co_filename
    lines = linecache.getlines(filename)
    if not lines:
        return None
    key = (filename, id(lines), len(lines))
    spans = _statements.get(key)
    if spans is None:
        tree = ast.parse("".join(lines), filename)
        spans = []
        for node in tree.body:
            decorators = getattr(node, "decorator_list", None) or ()
            begin = min([node.lineno, *(d.lineno for d in decorators)])
            spans.append((begin, node.end_lineno or node.lineno))
        if len(_statements) >= 64:
            del _statements[next(iter(_statements))]
        _statements[key] = spans
    line = code.co_firstlineno
    span = next(((b, e) for b, e in spans if b <= line <= e), None)
    if span is None:
        return None
    start, end = span
    snippet = "".join(lines[start - 1 : end])
    futures = tuple(name for name, flag in _FUTURE_FLAGS.items() if code.co_flags & flag)
    flags = 0
    for name in futures:
        flags |= _FUTURE_FLAGS[name]
    module = compile("\n" * (start - 1) + snippet, filename, "exec", flags, dont_inherit=True)
    same_place = [c for c in _codes(module) if c.co_name == code.co_name and c.co_firstlineno == line]
    for rank, candidate in enumerate(same_place):
        if same_code(candidate, code):
            return (snippet, filename, start, futures, code.co_name, line, rank)
    return None


_FLAG_MASK = 0x3FF  # code flags that change behaviour (generator, varargs, ...); higher bits are futures


def same_code(a: types.CodeType, b: types.CodeType) -> bool:
    """Whether two code objects do the same thing: line numbers and file names may differ, nothing else."""
    if (
        a.co_code != b.co_code
        or a.co_names != b.co_names
        or a.co_varnames != b.co_varnames
        or a.co_freevars != b.co_freevars
        or a.co_cellvars != b.co_cellvars
        or a.co_argcount != b.co_argcount
        or a.co_posonlyargcount != b.co_posonlyargcount
        or a.co_kwonlyargcount != b.co_kwonlyargcount
        or (a.co_flags ^ b.co_flags) & _FLAG_MASK
        or getattr(a, "co_exceptiontable", None) != getattr(b, "co_exceptiontable", None)
        or len(a.co_consts) != len(b.co_consts)
    ):
        return False
    return all(same_const(x, y) for x, y in zip(a.co_consts, b.co_consts, strict=True))


def same_const(x: object, y: object) -> bool:
    if type(x) is not type(y):
        return False
    if isinstance(x, types.CodeType):
        return same_code(x, y)  # type: ignore[arg-type]
    if isinstance(x, tuple):
        other: tuple[object, ...] = y  # type: ignore[assignment]
        return len(x) == len(other) and all(map(same_const, x, other))
    if isinstance(x, (float, complex)):
        return repr(x) == repr(y)  # tells 0.0 from -0.0, and nan equals nan
    try:
        return bool(x == y)
    except Exception:  # noqa: BLE001 - a value whose __eq__ fails is simply not the same constant
        return False


# -- dill pickles with portable code, and what a link may send ----------------------------------------------

_portable_pickler: Any = None


def portable_dumps(obj: object, protocol: int, **options: Any) -> bytes:
    """`dill.dumps(obj, protocol, **options)` with every code object pickled by `save_code`."""
    buffer = io.BytesIO()
    portable_pickler()(buffer, protocol, **options).dump(obj)
    return buffer.getvalue()


def portable_pickler() -> Any:
    """dill's Pickler class with every code object pickled by `save_code` (made on first use, when dill is
    imported): subclass it for a pickler of one's own."""
    global _portable_pickler
    if _portable_pickler is None:
        import dill  # noqa: PLC0415 - only what the standard pickle refused comes here

        base = dill.Pickler.dispatch

        class Dispatch(dict):  # type: ignore[type-arg]
            """`save_code` for code objects, then dill's table (which grows as dill registers types)."""

            def __missing__(self, key: type) -> Any:
                return base[key]

            def get(self, key: Any, default: Any = None) -> Any:
                return dict.get(self, key) or base.get(key, default)

        class PortablePickler(dill.Pickler):  # type: ignore[misc]
            dispatch = Dispatch({types.CodeType: save_code})

        _portable_pickler = PortablePickler
    return _portable_pickler


class Screen:
    """What a link may send a peer whose Python is another than the one that pickled the bodies: decided
    once per body (a body with code that has no source, `NO_SOURCE`, may not go), then by identity for
    every task of it. `refuse(tasks, message)` takes the others (fails them, or gives them back)."""

    def __init__(self, peer: str, python: str, refuse: Any, producer: str = THIS_PYTHON) -> None:
        self.peer = peer
        self.python = python
        self.producer = producer
        self.refuse = refuse
        self._verdicts: dict[bytes, str] = {}  # digest -> "" (may go) or why not

    def __call__(self, batch: list[Any]) -> list[Any]:
        """The tasks of `batch` that may go; the others went to `refuse`."""
        kept: list[Any] = []
        refused: dict[str, list[Any]] = {}
        last = None
        why = ""
        for task in batch:
            body = task.body
            if body is not last:
                last = body
                why = self._verdict(body)
            if why:
                refused.setdefault(why, []).append(task)
            else:
                kept.append(task)
        for message, tasks in refused.items():
            self.refuse(tasks, message)
        return kept

    def _verdict(self, body: Any) -> str:
        why = self._verdicts.get(body.digest)
        if why is None:
            why = ""
            if NO_SOURCE in body.pickled:
                why = (
                    f"function {body.name} cannot run on {self.peer}: it travels pickled by value, as "
                    f"bytecode of {self.producer}, which {self.python} cannot run, and it has no source "
                    f"to compile there {_NO_SOURCE_WHY}: {_advice(self.producer)}"
                )
            if len(self._verdicts) >= _SOURCES_MAX:
                del self._verdicts[next(iter(self._verdicts))]
            self._verdicts[body.digest] = why
        return why
