"""Which Python runs here, what runs where, and the loading side of pickles made for any Python.

Bytecode runs only on the Python (implementation and major.minor) that made it: another one crashes on it
or fails with nonsense. `THIS_PYTHON` is what `NodeInfo.python` says of this process (protocol version 2),
and `runs_bytecode_of` compares two of them.

Every pickle ppft makes with dill (function bodies, arguments, module data, results) is made by
`ppft_worker.portable`, which writes each code object, and each class of `__main__` whose statement is in a
file, as a choice the *loading* Python makes from its own bytecode magic number: dill's own reconstruction
on the same Python, else one of the functions below, which compile the verified source that travels with
it (`code_from_source`, `class_from_source`), or raise `ForeignPythonError` naming both Pythons and what to
do (`bytecode_without_source`). A code object nested in another's constants is rebuilt with its parent, so
it only gives `None` where it is missing.

`NO_SOURCE` appears in a pickle exactly when a top-level code in it has no source: `Screen` lets a link
decide once per function body whether it may go to a peer of another Python (a client for its ppservers,
a ppserver for its dial-in workers).

The path of this module and the names of its loading functions are written into pickles: keep them
importable as they are. This module must never import dill, nor run code it compiles other than a class
statement that a pickle asks for (what dill's own class pickles do too).
"""

from __future__ import annotations
import __future__

import builtins
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
    "class_from_source",
    "code_from_source",
    "codes_of",
    "python_line",
    "runs_bytecode_of",
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
    module = _compiled_statement(snippet, filename, start, futures, name, firstlineno, producer, nested)
    if module is None:
        return None
    found = [c for c in codes_of(module) if c.co_name == name and c.co_firstlineno == firstlineno]
    if rank < len(found) and found[rank].co_freevars == freevars:
        return found[rank]
    if nested:
        return None
    raise ForeignPythonError(
        f"{name} (line {firstlineno} of {filename}) was pickled by value by {producer}, and its source, "
        f"compiled on {THIS_PYTHON}, does not give the same function (its closure or its place differ): "
        f"{_advice(producer)}"
    )


def _compiled_statement(
    snippet: str,
    filename: str,
    start: int,
    futures: tuple[str, ...],
    name: str,
    firstlineno: int,
    producer: str,
    nested: bool = False,
) -> types.CodeType | None:
    """`snippet` (the statement at line `start` of `filename`) compiled here, once; None (`nested`) or
    `ForeignPythonError` when this Python cannot compile it."""
    key = (snippet, filename, start, futures)
    module: types.CodeType | None = _compiled.get(key)
    if module is not None:
        return module
    flags: int = 0
    for feature in futures:
        flags |= int(getattr(__future__, feature).compiler_flag)
    try:
        module = compile("\n" * (start - 1) + snippet, filename, "exec", flags, dont_inherit=True)
    except SyntaxError as exc:
        if nested:
            return None
        raise ForeignPythonError(
            f"{name} (line {firstlineno} of {filename}) was pickled by value by {producer}, and its source "
            f"does not compile on {THIS_PYTHON} ({exc.msg}, line {exc.lineno}): {_advice(producer)}"
        ) from None
    if len(_compiled) >= _COMPILED_MAX:
        del _compiled[next(iter(_compiled))]
    _compiled[key] = module
    return module


def class_from_source(
    snippet: str,
    filename: str,
    start: int,
    futures: tuple[str, ...],
    name: str,
    namespace: dict[str, Any],
    producer: str,
) -> type:
    """The class `name` made by this Python from its class statement `snippet` (line `start` of
    `filename`), executed in a fresh module namespace `__main__` holding `namespace` (the functions,
    classes, modules and constants of its module that the statement names)."""
    module = _compiled_statement(snippet, filename, start, futures, name, start, producer)
    assert module is not None
    ns: dict[str, Any] = {"__name__": "__main__", "__builtins__": builtins, **namespace}
    try:
        exec(module, ns)
    except Exception as exc:
        raise ForeignPythonError(
            f"class {name} (line {start} of {filename}) was pickled by value by {producer}, and its class "
            f"statement fails on {THIS_PYTHON}: {type(exc).__name__}: {exc}"
        ) from exc
    made = ns.get(name)
    if not isinstance(made, type):
        raise ForeignPythonError(f"the class statement of {name} (line {start} of {filename}) made no class")
    return made


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


def codes_of(code: types.CodeType) -> list[types.CodeType]:
    """`code` and every code object in its constants, depth first, in the order the compiler made them."""
    found = [code]
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            found.extend(codes_of(const))
    return found


# -- what a link may send -----------------------------------------------------------------------------


_VERDICTS_MAX = 4096


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
            if len(self._verdicts) >= _VERDICTS_MAX:
                del self._verdicts[next(iter(self._verdicts))]
            self._verdicts[body.digest] = why
        return why
