"""Pickling a function body's callables by value: code and closures travel, module globals never do.

A callable that has no verified source and that a worker cannot import by reference (a lambda, a closure,
a decorated function, anything defined by `python -c`, stdin, `exec` or a REPL) travels by value with dill.
dill would pickle the module globals such a function reads *into* the pickle: a copy taken when the body
was built, which the body cache then keeps (stale after an in-place change), which fails on the first
unpicklable global (a lock) even when the job never reads it, and which gives each function a private
globals dict that per-job values cannot reach. So here every by-value Python function is pickled with its
globals replaced by a reference to the loading side's `__main__.__dict__`: on a worker that is the
function's namespace (the worker sets `sys.modules["__main__"]` to it while it loads a body), where the
body's imports, shipped functions and classes, and each job's module data are put. The reference is plain
`getattr(importlib.import_module("__main__"), "__dict__")`, which every worker (ppft 2.0.0's too) loads.
What the functions read from their module is found by `functions._Builder` (names of their code), not by
dill.

This module must never import dill before a by-value callable needs it, nor pickle a module's globals.
"""

from __future__ import annotations

import functools
import importlib
import io
import logging
import pickle
import sys
import types
from collections.abc import Iterable
from typing import Any

from ppft_worker.portable import save_code

from .arguments import ShippingError

log = logging.getLogger("ppft.client")

__all__ = [
    "BODY_PICKLE_PROTOCOL",
    "EMPTY",
    "by_value_code",
    "cell_content",
    "immutable_constant",
    "importable",
    "is_code",
    "pickle_by_value",
    "pickle_payload",
    "pickled_cells",
]

BODY_PICKLE_PROTOCOL = 5
"""Pickle protocol of function payloads: the highest one every supported Python (3.10+) reads."""


_CONSTANT_TYPES = (bool, int, float, complex, str, bytes, type(None))


def immutable_constant(obj: object, depth: int = 0) -> bool:
    """Numbers, strings, bytes, None, and tuples/frozensets of them: safe to copy to a worker."""
    if isinstance(obj, _CONSTANT_TYPES):
        return True
    if isinstance(obj, (tuple, frozenset)) and depth < 3:
        return all(immutable_constant(item, depth + 1) for item in obj)
    return False


def is_code(obj: object) -> bool:
    """Whether `obj` travels as code rather than as data: a module, a function, a class, a builtin of a
    module (`math.sin`; a builtin bound to an object, `LIST.append`, is data)."""
    if isinstance(obj, types.BuiltinFunctionType):
        owner = obj.__self__
        return owner is None or isinstance(owner, types.ModuleType)
    return isinstance(obj, (types.ModuleType, types.FunctionType, type))


def importable(obj: Any) -> bool:
    """Whether pickle can refer to `obj` by module and name, from a module other than `__main__`."""
    module_name = getattr(obj, "__module__", None)
    qualname = getattr(obj, "__qualname__", None)
    if not isinstance(module_name, str) or module_name == "__main__" or not isinstance(qualname, str):
        return False
    target: object = sys.modules.get(module_name)
    for part in qualname.split("."):
        target = getattr(target, part, None)
    return target is obj


def by_value_code(roots: Iterable[Any]) -> list[types.FunctionType | type]:
    """The Python functions and classes that pickling `roots` by value carries: the roots themselves
    (through partials and bound methods), what their closures, defaults and attributes hold, and the
    methods of classes that travel by value. Objects importable by reference are not followed."""
    found: list[types.FunctionType | type] = []
    seen: set[int] = set()
    todo = list(roots)
    while todo:
        obj = todo.pop()
        while isinstance(obj, (functools.partial, types.MethodType)):
            if isinstance(obj, functools.partial):
                todo.extend((*obj.args, *obj.keywords.values()))
                obj = obj.func
            else:
                obj = obj.__func__
        if isinstance(obj, (staticmethod, classmethod)):
            obj = obj.__func__
        if id(obj) in seen or not isinstance(obj, (types.FunctionType, type)) or importable(obj):
            continue
        seen.add(id(obj))
        if isinstance(obj, type):
            found.append(obj)
            for value in vars(obj).values():
                if isinstance(value, property):
                    todo.extend(f for f in (value.fget, value.fset, value.fdel) if f is not None)
                else:
                    todo.append(value)
            continue
        found.append(obj)
        todo.extend(_cell_contents(obj.__closure__ or ()))
        todo.extend(obj.__defaults__ or ())
        todo.extend((obj.__kwdefaults__ or {}).values())
        todo.extend(obj.__dict__.values())
    return found


def _cell_contents(closure: tuple[Any, ...]) -> list[object]:
    contents = []
    for cell in closure:
        try:
            contents.append(cell.cell_contents)
        except ValueError:  # a cell not yet assigned
            pass
    return contents


def pickle_by_value(payload: object, protocol: int = BODY_PICKLE_PROTOCOL) -> bytes:
    """`payload` pickled by dill, each by-value function bound on loading to `__main__.__dict__`."""
    buffer = io.BytesIO()
    _pickler_class()(buffer, protocol).dump(payload)
    return buffer.getvalue()


class _MainModule:
    """Pickles as `importlib.import_module("__main__")`: the loading side's `__main__` module."""

    def __reduce__(self) -> tuple[Any, ...]:
        return importlib.import_module, ("__main__",)


_MAIN = _MainModule()
_pickler: type | None = None


def _pickler_class() -> type:
    """dill's Pickler with by-value functions rebound to `__main__`'s globals (made on first use: dill is
    imported only by callables that need it)."""
    global _pickler
    if _pickler is not None:
        return _pickler
    import dill  # noqa: PLC0415 - only paid for by callables that need it

    dill_dispatch = dill.Pickler.dispatch
    save_function = dill_dispatch[types.FunctionType]
    save_dict = dill_dispatch[dict]

    class Dispatch(dict):  # type: ignore[type-arg]
        """Our two entries, then dill's table (which keeps growing as dill registers types lazily)."""

        def __missing__(self, key: type) -> Any:
            return dill_dispatch[key]

        def get(self, key: Any, default: Any = None) -> Any:
            try:
                return self[key]
            except KeyError:
                return default

    class BodyPickler(dill.Pickler):  # type: ignore[misc]
        dispatch = Dispatch()

        def __init__(self, file: io.BytesIO, protocol: int) -> None:
            super().__init__(file, protocol, byref=False, recurse=False)
            self._main_dict = vars(sys.modules["__main__"])
            self._rebound: dict[int, tuple[types.FunctionType, types.FunctionType]] = {}

        def rebound(self, func: types.FunctionType) -> types.FunctionType:
            """`func` with `__main__`'s globals (one copy per function, so dill's memo sees cycles)."""
            pair = self._rebound.get(id(func))
            if pair is None:
                copy = types.FunctionType(
                    func.__code__, self._main_dict, func.__name__, func.__defaults__, func.__closure__
                )
                copy.__kwdefaults__ = func.__kwdefaults__
                copy.__qualname__ = func.__qualname__
                copy.__doc__ = func.__doc__
                copy.__annotations__ = func.__annotations__
                copy.__dict__.update(func.__dict__)
                copy.__module__ = "__main__"  # what dill takes as "its globals are __main__'s"
                pair = self._rebound[id(func)] = (func, copy)
            return pair[1]

    def _save_function(pickler: BodyPickler, obj: types.FunctionType) -> None:
        if (obj.__globals__ is not pickler._main_dict or obj.__module__ != "__main__") and not importable(
            obj
        ):
            obj = pickler.rebound(obj)
        save_function(pickler, obj)

    def _save_dict(pickler: BodyPickler, obj: dict[str, Any]) -> None:
        if obj is pickler._main_dict:
            pickler.save_reduce(getattr, (_MAIN, "__dict__"), obj=obj)
        else:
            save_dict(pickler, obj)

    BodyPickler.dispatch[types.FunctionType] = _save_function
    BodyPickler.dispatch[dict] = _save_dict
    BodyPickler.dispatch[types.CodeType] = save_code  # bytecode for this Python, source for the others
    _pickler = BodyPickler
    return BodyPickler


# -- whole payloads ------------------------------------------------------------------------------------


def pickle_payload(payload: object, name: str) -> bytes:
    """The stdlib pickle when it refers only to importable objects outside `__main__`, else dill's, with
    each by-value function's module globals left out (`bodypickle`)."""
    try:
        data = pickle.dumps(payload, BODY_PICKLE_PROTOCOL)
    except Exception:  # noqa: BLE001 - any failure of the fast path means: try dill, which raises clearly
        data = None
    if data is not None and b"__main__" not in data:
        return data
    log.debug("function %s: pickled by value with dill", name)
    try:
        return pickle_by_value(payload, BODY_PICKLE_PROTOCOL)
    except Exception as exc:
        raise ShippingError(
            f"function {name!r} cannot be sent to a worker: neither pickle nor dill can serialize it "
            f"({type(exc).__name__}: {exc}); define it at the top level of a module, or pass what it "
            "captures as arguments"
        ) from exc


def pickled_cells(
    pickled_objs: list[Any], pickled: bytes
) -> tuple[tuple[tuple[tuple[Any, ...], tuple[object, ...]], ...], bool]:
    """The closure cells dill pickled with the callables, for the cache to watch, and whether one holds
    data that may change in place (a list, a dict, an instance): such a body is never reused."""
    if b"dill._dill" not in pickled:
        return (), False
    cells: list[tuple[tuple[Any, ...], tuple[object, ...]]] = []
    holds_data = False
    for obj in by_value_code(pickled_objs):
        if isinstance(obj, type) or not obj.__closure__:
            continue
        contents = tuple(map(cell_content, obj.__closure__))
        cells.append((obj.__closure__, contents))
        holds_data = holds_data or any(
            not (is_code(v) or v is EMPTY or immutable_constant(v) or isinstance(v, functools.partial))
            for v in contents
        )
    return tuple(cells), holds_data


def cell_content(cell: Any) -> object:
    try:
        return cell.cell_contents
    except ValueError:  # a cell not yet assigned
        return EMPTY


EMPTY = object()
"""What `cell_content` gives for a cell not yet assigned."""
