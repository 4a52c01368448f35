"""Module data that travels with each job: read at every submit, pickled once per submit, fresh on the worker.

A function body is cached (per function object) and sent once per worker; the plain data values that the
function and the code shipped with it read from their module (a dict, a list, an instance, ...) cannot
live in it, or a value changed after the first submit would never be seen. So `functions._Builder` lists
those names (`ModuleData`), and each submit reads their current values, pickles them once, and wraps every
job's pickled arguments in a small pickle that, when the worker unpickles the arguments (which it does with
`sys.modules["__main__"]` set to the job's namespace), first puts the values into that namespace, then
gives the arguments:

    getitem((vars(__main__).update(loads(VALUES)), vars(__main__).pop(NAME, None)..., loads(ARGS)), -1)

Only standard callables appear in it (`getattr`, `importlib.import_module`, `operator.getitem`,
`pickle.loads`, and `dill.loads` for values that need dill), so every worker runs it, a ppft 2.0.0 one (a
protocol-1 peer) included, and a ppserver relays it untouched. Every job of such a function carries all of
its names, so a job never sees another submit's values; a name the caller no longer has is removed (the
`pop`s), so its old value does not linger; each job unpickles its own copy, so what one job changes in
place is not seen by the next. Jobs of functions that read no module data are untouched (no wrapper).

A value that cannot be pickled does not travel: its name is listed under `__ppft_unshipped__` with the
reason, the worker turns a job's `NameError` for it into a message that says why, and the caller's log
says it once. A value that pickles large (`LARGE_VALUE` bytes) travels all the same, with one warning
naming it and its size. This module must never pickle on the I/O thread (it runs in `submit`), nor
unpickle anything.
"""

from __future__ import annotations

import importlib
import io
import logging
import operator
import pickle
import sys
import threading
import types
from collections.abc import Mapping
from typing import Any

from ppft_worker.portable import Call as _Call
from ppft_worker.portable import portable_dumps, portable_pickler

from .arguments import ShippingError, pickle_args_by
from .bodypickle import importable, is_code

__all__ = ["LARGE_VALUE", "UNSHIPPED", "ModuleData", "Prepared"]

log = logging.getLogger("ppft.client")

LARGE_VALUE = 1 << 20
"""Bytes: a module value that pickles larger than this is sent with every job all the same, once warned."""

UNSHIPPED = "__ppft_unshipped__"
"""The namespace entry that names the globals a job could not be given, and why (read by the worker)."""

_MISSING = object()
_warned: set[tuple[str, str]] = set()
_warned_lock = threading.Lock()


_MAIN = _Call(importlib.import_module, "__main__")
_NAMESPACE = _Call(getattr, _MAIN, "__dict__")  # the worker's __main__ while it loads a job's arguments
_UPDATE = _Call(getattr, _NAMESPACE, "update")
_POP = _Call(getattr, _NAMESPACE, "pop")
_LOADS = pickle.loads
_dill_loads: Any = None


def _loader(by_dill: bool) -> Any:
    global _dill_loads
    if not by_dill:
        return _LOADS
    if _dill_loads is None:
        import dill  # noqa: PLC0415 - only for values that need it

        _dill_loads = dill.loads
    return _dill_loads


class ModuleData:
    """The names of module data a function body reads, where to read them, and how to send them."""

    __slots__ = ("_failed", "_keep", "_sized", "function", "names", "reads", "shipped")

    def __init__(
        self,
        function: str,
        reads: tuple[tuple[Mapping[str, Any], tuple[str, ...]], ...],
        shipped: Mapping[str, Any],
    ) -> None:
        self.function = function  # for messages
        self.reads = reads  # (module dict, names read from it)
        self.names = tuple(name for _, names in reads for name in names)
        self.shipped = {id(obj): name for name, obj in shipped.items()}  # what the body defines there
        self._keep = tuple(shipped.values())  # (so that the ids above stay theirs)
        self._failed: dict[str, tuple[object, str]] = {}  # name -> value that did not pickle, and why
        self._sized = False  # whether the large values were looked for

    def values(self, strict: bool = True) -> tuple[dict[str, Any], list[str]] | None:
        """The current values and the names now missing; None when a name now holds code (a function,
        class or module: the body must be built again, since code travels in it), unless not `strict`:
        then such a name is left out."""
        values: dict[str, Any] = {}
        missing: list[str] = []
        for module_dict, names in self.reads:
            for name in names:
                value = module_dict.get(name, _MISSING)
                if value is _MISSING:
                    missing.append(name)
                elif is_code(value):
                    if strict:
                        return None
                else:
                    values[name] = value
        return values, missing

    def prepare(self, values: dict[str, Any], missing: list[str], protocol: int) -> Prepared:
        """The values pickled once for the jobs of one submit (or of one `map`)."""
        data, by_dill, unshipped = self._pickle(values, protocol)
        if len(data) > LARGE_VALUE:
            self._warn_large(values, protocol)
        pops = tuple(missing) + tuple(unshipped)
        note = None
        if unshipped:
            note = _Call(_UPDATE, {UNSHIPPED: unshipped})
        elif missing:  # no reason of an earlier submit may explain this one's NameError
            pops += (UNSHIPPED,)
        return Prepared(_Call(_UPDATE, _Call(_loader(by_dill), data)), note, pops)

    # -- pickling the values ------------------------------------------------------------------------------

    def _pickle(self, values: dict[str, Any], protocol: int) -> tuple[bytes, bool, dict[str, str]]:
        """(pickle, made by dill, {name: why it could not be pickled})."""
        unshipped: dict[str, str] = {}
        for name, (value, why) in self._failed.items():  # the same object fails the same way: not again
            if values.get(name, _MISSING) is value:
                del values[name]
                unshipped[name] = why
        try:
            return (*self._dumps(values, protocol), unshipped)
        except Exception:  # noqa: BLE001 - find which values fail, send the others
            pass
        for name in list(values):
            try:
                self._dumps({name: values[name]}, protocol)
            except Exception as exc:  # noqa: BLE001 - reported on the worker and in the log
                value = values.pop(name)
                why = (
                    f"its value, a {_type_name(type(value))}, cannot be pickled ({type(exc).__name__}: {exc})"
                )
                unshipped[name] = why
                self._failed[name] = (value, why)
        for name, why in unshipped.items():
            _warn_once(
                "unshipped",
                name,
                "function %s reads the global %s, which cannot be sent to a worker: %s; a job that reads it "
                "fails with NameError. Create it inside the function, or pass what the job needs as an "
                "argument",
                self.function,
                name,
                why,
            )
        return (*self._dumps(values, protocol), unshipped)

    def _dumps(self, values: dict[str, Any], protocol: int) -> tuple[bytes, bool]:
        """(pickle, made by dill): the stdlib's unless a value holds a function or class the worker cannot
        import (the caller's `__main__`'s, say), then dill's, by value, as for arguments. Classes and
        functions the body defines in the worker's namespace are referred to there by name, so a job's
        data and the code it runs share one class (isinstance holds)."""
        pickler = _StdPickler(self.shipped, protocol)
        try:
            pickler.dump(values)
        except Exception:  # noqa: BLE001 - dill's turn, which raises clearly
            pickler.by_value = True
        if not pickler.by_value:
            return pickler.getvalue(), False
        return _dill_values(values, protocol, self.shipped), True

    def _warn_large(self, values: dict[str, Any], protocol: int) -> None:
        """Name the large values, once per function (finding them costs a pickle of each)."""
        if self._sized:
            return
        self._sized = True
        for name, value in values.items():
            if ("large", name) in _warned:
                continue
            try:
                size = len(pickle_args_by(value, protocol)[0])
            except ShippingError:
                continue
            if size > LARGE_VALUE:
                _warn_once(
                    "large",
                    name,
                    "function %s reads the global %s, %.1f MiB pickled, which is sent with every job; pass "
                    "it as an argument only to the jobs that need it, or have the job load it",
                    self.function,
                    name,
                    size / (1 << 20),
                )


def _in_namespace(obj: Any, shipped: dict[int, str]) -> Any:
    """The reduction of a class or function the body defines on the worker: its namespace's entry."""
    name = shipped.get(id(obj))
    return NotImplemented if name is None else (getattr, (_MAIN, name))


class _StdPickler(pickle.Pickler):
    """The stdlib pickler, referring to the body's own classes and functions in the worker's namespace,
    and noting (`by_value`) any other object that pickle would refer to by a name the worker lacks."""

    def __init__(self, shipped: dict[int, str], protocol: int) -> None:
        self._buffer = io.BytesIO()
        super().__init__(self._buffer, protocol)
        self.shipped = shipped
        self.by_value = False

    def reducer_override(self, obj: Any) -> Any:
        if isinstance(obj, (type, types.FunctionType)):
            found = _in_namespace(obj, self.shipped)
            if found is NotImplemented and not importable(obj) and obj.__module__ != "builtins":
                self.by_value = True
            return found
        return NotImplemented

    def getvalue(self) -> bytes:
        return self._buffer.getvalue()


def _dill_values(values: dict[str, Any], protocol: int, shipped: dict[int, str]) -> bytes:
    """dill's pickle of `values`, by value as for arguments, refusing what a copy would betray: locks,
    threads, files, sockets (dill would copy them; the copy would neither lock nor write what the caller's
    does), so the job fails naming the global instead of behaving differently."""
    global _ValuesPickler
    if _ValuesPickler is None:

        class ValuesPickler(portable_pickler()):  # type: ignore[misc]  # code: loadable by any Python
            shipped: dict[int, str] = {}

            def reducer_override(self, obj: Any) -> Any:
                if isinstance(obj, _resource_types()):
                    raise TypeError(f"cannot pickle '{_type_name(type(obj))}' object")
                if isinstance(obj, (type, types.FunctionType)):
                    return _in_namespace(obj, self.shipped)
                return NotImplemented

        _ValuesPickler = ValuesPickler

    def prepare(pickler: Any) -> None:
        pickler.shipped = shipped

    return portable_dumps(values, protocol, _ValuesPickler, prepare, byref=False, recurse=True)


_ValuesPickler: Any = None


def _resource_types() -> tuple[type, ...]:
    """Types whose copy in another process would not be the same resource (the stdlib pickle refuses
    them; dill copies them)."""
    found: list[type] = [type(threading.Lock()), type(threading.RLock()), io.IOBase, types.GeneratorType]
    found += [threading.Condition, threading.Semaphore, threading.Event, threading.Thread]
    socket = sys.modules.get("socket")
    if socket is not None:
        found.append(socket.socket)
    return tuple(found)


class Prepared:
    """The values of one submit, ready to wrap each job's arguments."""

    __slots__ = ("install", "note", "pops")

    def __init__(self, install: _Call, note: _Call | None, pops: tuple[str, ...]) -> None:
        self.install = install
        self.note = note
        self.pops = pops

    def wrap(self, args: tuple[Any, ...], protocol: int) -> bytes:
        """A job's pickled arguments, which put the values into the worker's namespace on loading."""
        data, by_dill = pickle_args_by(args, protocol)
        steps: list[Any] = [self.install]
        steps.extend(_Call(_POP, name, None) for name in self.pops)
        if self.note is not None:
            steps.append(self.note)
        steps.append(_Call(_loader(by_dill), data))
        return pickle.dumps(_Call(operator.getitem, tuple(steps), -1), protocol)


def _type_name(cls: type) -> str:
    return cls.__qualname__ if cls.__module__ == "builtins" else f"{cls.__module__}.{cls.__qualname__}"


def _warn_once(kind: str, name: str, message: str, *args: Any) -> None:
    """Log `message` the first time a global `name` has this `kind` of trouble."""
    with _warned_lock:
        if (kind, name) in _warned:
            return
        _warned.add((kind, name))
    log.warning(message, *args)
