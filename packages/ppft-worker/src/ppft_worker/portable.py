"""Pickling with dill so that another Python loads the pickle: code as bytecode and source, classes of
`__main__` as dill's and as their class statement (the loading side is `ppft_worker.pythons`).

`save_code` writes each code object as an expression the loading Python evaluates: dill's own arguments
where its bytecode magic number is this one's (so a ppft 2.0.0 peer of the same Python loads it unchanged),
`pythons.code_from_source` with the verified source of the top-level statement that defines it elsewhere,
`pythons.bytecode_without_source` (a clear error) where no source is found.

Classes of `__main__` cannot be chosen that way: a class is one object that every reference in a pickle
shares, and the branch a Python does not take is still built. So `portable_dumps`, when `save_class` met
such a class whose class statement is in a file, makes the whole pickle twice: this Python's (dill's, as
ever), and one for other Pythons where each such class is its statement, executed by the loading Python
(`pythons.class_from_source`) with the functions, classes, modules and constants of its module that it
names, so a dataclass's generated methods are generated there again. The outer pickle hands the loading
Python the one made for it (`_pick`: from data only; the other is bytes it never reads), and each is whole,
so each class is one object in it.

A source is *verified*: the statement is compiled here and must give code objects equal to the live ones
(`same_code`), so an edited file or a redefinition in a REPL never passes for the code that runs.

This module must never run the code it compiles, nor import dill before something is pickled with it.
"""

from __future__ import annotations
import __future__

import ast
import importlib
import importlib.util
import io
import itertools
import linecache
import pickle
import sys
import types
from typing import Any

from .pythons import NO_SOURCE, THIS_PYTHON, codes_of

__all__ = [
    "Call",
    "Layered",
    "portable_dumps",
    "portable_pickler",
    "same_code",
    "same_const",
    "save_class",
    "save_class_statement",
    "save_code",
]

_LOADERS = "ppft_worker.pythons"  # where the loading side's functions live (a name written into pickles)


class Call:
    """Pickles as `func(*args)` (`func` itself pickled: a builtin by name, or another `Call`)."""

    __slots__ = ("args", "func")

    def __init__(self, func: Any, *args: Any) -> None:
        self.func = func
        self.args = args

    def __reduce__(self) -> tuple[Any, ...]:
        return self.func, self.args

    def __call__(self, *args: Any) -> Any:  # pickle wants a reduce's callable to be callable
        raise TypeError("a Call only describes a call for pickle; it is not called here")


_MAGIC = importlib.util.MAGIC_NUMBER
_LOADING_MAGIC = Call(getattr, Call(importlib.import_module, "importlib.util"), "MAGIC_NUMBER")


def _pick(native: object, other: object) -> Call:
    """`native` where the loading Python has this one's magic, else `other`."""
    return Call(Call(getattr, {_MAGIC: native}, "get"), _LOADING_MAGIC, other)


_LOADER = Call(
    getattr,
    Call(importlib.import_module, _pick("dill._dill", _LOADERS)),
    _pick("_create_code", "code_from_source"),
)
_NO_SOURCE_LOADER = Call(
    getattr,
    Call(importlib.import_module, _pick("dill._dill", _LOADERS)),
    _pick("_create_code", NO_SOURCE.decode()),
)
_CLASS_FROM_SOURCE = Call(getattr, Call(importlib.import_module, _LOADERS), "class_from_source")
_DILL_LOADS = Call(getattr, Call(importlib.import_module, "dill._dill"), "loads")
_dill_save_code: Any = None
_dill_save_type: Any = None


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
            next, (Call(itertools.starmap, loader, [_pick(captured[0], portable)]),), obj=code
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
            spans.append((_begin(node), node.end_lineno or node.lineno))
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
    same_place = [c for c in codes_of(module) if c.co_name == code.co_name and c.co_firstlineno == line]
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


def save_class(pickler: Any, cls: type) -> None:
    """dill's way for a class (`dispatch[type]` of the portable pickler), noting a class of `__main__` whose
    class statement can travel: `portable_dumps` then makes a second pickle, for other Pythons."""
    global _dill_save_type
    if _dill_save_type is None:
        import dill._dill  # noqa: PLC0415 - a dill pickler is at work: dill is loaded already

        _dill_save_type = dill._dill.save_type
    if not pickler.__dict__.get("_ppft_statements") and _by_statement(pickler, cls) is not None:
        pickler._ppft_statements = True
    _dill_save_type(pickler, cls)


def save_class_statement(pickler: Any, cls: type) -> None:
    """A class of `__main__` as its class statement, run by the loading Python (`dispatch[type]` of the
    pickle for other Pythons); any other class as dill has it."""
    source = _by_statement(pickler, cls)
    if source is None:
        save_class(pickler, cls)
        return
    saving: set[type] = pickler.__dict__.setdefault("_ppft_saving", set())
    saving.add(cls)
    try:
        snippet, filename, start, futures, names = source
        module = vars(sys.modules["__main__"])
        namespace = {
            name: module[name]
            for name in names
            if name in module and _travels(module[name]) and module[name] not in saving
        }
        args = (snippet, filename, start, futures, cls.__name__, namespace, THIS_PYTHON)
        pickler.save_reduce(_CLASS_FROM_SOURCE, args, obj=cls)
    finally:
        saving.discard(cls)


def _by_statement(pickler: Any, cls: type) -> tuple[Any, ...] | None:
    """The verified class statement of `cls` if dill pickles it by value here and it may travel so."""
    if (
        cls.__module__ != "__main__"
        or getattr(pickler, "_byref", False)
        or (cls.__bases__ == (tuple,) and hasattr(cls, "_fields"))  # dill makes namedtuples anew anyway
        or cls in pickler.__dict__.get("_ppft_saving", ())
    ):
        return None
    return _verified_class_source(cls)


def _travels(value: object) -> bool:
    """What a class statement's namespace may carry: code, modules and immutable constants, not data."""
    if isinstance(value, (types.ModuleType, types.FunctionType, type, types.BuiltinFunctionType)):
        return True
    return isinstance(value, (bool, int, float, complex, str, bytes, type(None)))


_classes: dict[type, tuple[Any, ...] | None] = {}


def _verified_class_source(cls: type) -> tuple[Any, ...] | None:
    """(snippet, filename, start, futures, names) of the top-level class statement that made `cls`, or
    None: every function of the class that its file defines must compile from it to the same code."""
    try:
        return _classes[cls]
    except KeyError:
        pass
    try:
        found = _find_class_source(cls)
    except Exception:  # noqa: BLE001 - a class whose source cannot be read or checked travels as dill has it
        found = None
    if len(_classes) >= _SOURCES_MAX:
        del _classes[next(iter(_classes))]
    _classes[cls] = found
    return found


def _class_functions(cls: type) -> list[types.FunctionType]:
    found: list[types.FunctionType] = []
    for entry in vars(cls).values():
        value = entry.__func__ if isinstance(entry, (staticmethod, classmethod)) else entry
        if isinstance(value, property):
            found.extend(f for f in (value.fget, value.fset, value.fdel) if isinstance(f, types.FunctionType))
        elif isinstance(value, types.FunctionType):
            found.append(value)
    return found


def _find_class_source(cls: type) -> tuple[Any, ...] | None:
    if "<" in cls.__qualname__:
        return None  # defined inside a function: no statement of its own
    functions = _class_functions(cls)
    files = [getattr(sys.modules["__main__"], "__file__", None)]
    files += [f.__code__.co_filename for f in functions if f.__qualname__.startswith(f"{cls.__qualname__}.")]
    for filename in dict.fromkeys(files):  # the script, then the files its methods came from (a cell)
        found = _class_statement(cls, filename, functions) if filename else None
        if found is not None:
            return found
    return None


def _class_statement(cls: type, filename: str, functions: list[types.FunctionType]) -> tuple[Any, ...] | None:
    lines = linecache.getlines(filename)
    if not lines:
        return None
    tree = ast.parse("".join(lines), filename)
    mine = [f for f in functions if f.__code__.co_filename == filename]
    candidates = [node for node in tree.body if isinstance(node, ast.ClassDef) and node.name == cls.__name__]
    first = getattr(cls, "__firstlineno__", None) or (mine[0].__code__.co_firstlineno if mine else None)
    if first is not None:
        candidates = [n for n in candidates if _begin(n) <= first <= (n.end_lineno or n.lineno)]
    if len(candidates) != 1:
        return None
    node = candidates[0]
    start = _begin(node)
    snippet = "".join(lines[start - 1 : node.end_lineno])
    futures = tuple(
        alias.name
        for statement in tree.body
        if isinstance(statement, ast.ImportFrom) and statement.module == "__future__"
        for alias in statement.names
        if alias.name in _FUTURE_FLAGS
    )
    flags = 0
    for feature in futures:
        flags |= _FUTURE_FLAGS[feature]
    module = compile("\n" * (start - 1) + snippet, filename, "exec", flags, dont_inherit=True)
    compiled = codes_of(module)
    for function in mine:
        code = function.__code__
        if not any(
            c.co_name == code.co_name and c.co_firstlineno == code.co_firstlineno and same_code(c, code)
            for c in compiled
        ):
            return None
    names = sorted({name for c in compiled for name in c.co_names} - {cls.__name__})
    return (snippet, filename, start, futures, tuple(names))


def _begin(node: ast.stmt) -> int:
    decorators: list[ast.expr] = getattr(node, "decorator_list", None) or []
    return min([node.lineno, *(d.lineno for d in decorators)])


_portable_pickler: Any = None


def portable_dumps(
    obj: object,
    protocol: int,
    pickler_class: Any = None,
    prepare: Any = None,
    **options: Any,
) -> bytes:
    """`dill.dumps(obj, protocol, **options)`, loadable by any Python where the sources are known.

    `pickler_class`: a subclass of `portable_pickler()` (default: that class); `prepare(pickler)` sets up
    each pickler made. When `obj` holds a class of `__main__` whose class statement can travel, two
    pickles are made, this Python's and the other Pythons' (classes as their statements), and the loading
    Python picks its own: each is whole, so every class is one object within it."""
    cls = pickler_class or portable_pickler()
    first, statements = _dump(cls, obj, protocol, prepare, options)
    if not statements:
        return first
    second, _ = _dump(_statements_variant(cls), obj, protocol, prepare, options)
    return pickle.dumps(Call(_DILL_LOADS, _pick(first, second)), protocol)


def _dump(cls: Any, obj: object, protocol: int, prepare: Any, options: dict[str, Any]) -> tuple[bytes, bool]:
    buffer = io.BytesIO()
    pickler = cls(buffer, protocol, **options)
    if prepare is not None:
        prepare(pickler)
    pickler.dump(obj)
    return buffer.getvalue(), bool(pickler.__dict__.get("_ppft_statements"))


class Layered(dict):  # type: ignore[type-arg]
    """A pickler's dispatch table: its own entries, then those of `base` (dill's, which keeps growing as
    dill registers types lazily, and which finds the entry of a metaclass's instances)."""

    def __init__(self, base: Any, entries: dict[type, Any]) -> None:
        super().__init__(entries)
        self.base = base

    def __missing__(self, key: type) -> Any:
        return self.base[key]

    def get(self, key: Any, default: Any = None) -> Any:
        return dict.get(self, key) or self.base.get(key, default)


_variants: dict[type, type] = {}


def _statements_variant(cls: Any) -> Any:
    """`cls` with classes of `__main__` pickled as their class statements (made once per class)."""
    variant = _variants.get(cls)
    if variant is None:
        dispatch = Layered(cls.dispatch, {type: save_class_statement})
        variant = type(cls.__name__ + "ForOtherPythons", (cls,), {"dispatch": dispatch})
        _variants[cls] = variant
    return variant


def portable_pickler() -> Any:
    """dill's Pickler class with `save_code` and `save_class` (made on first use, when dill is imported):
    subclass it for a pickler of one's own."""
    global _portable_pickler
    if _portable_pickler is None:
        import dill  # noqa: PLC0415 - only what the standard pickle refused comes here

        class PortablePickler(dill.Pickler):  # type: ignore[misc]
            dispatch = Layered(dill.Pickler.dispatch, {types.CodeType: save_code, type: save_class})

        _portable_pickler = PortablePickler
    return _portable_pickler
