"""Capturing a job's function on the client: `function_body` and `function_job`, cached per function.

`function_body` turns `submit`'s `func`, `depfuncs`, `modules` and `globals` into one content-addressed
`FunctionBody` (how: `builder`); `function_job` adds the module data its jobs carry as it is now
(`moduledata`); `pickle_args` and `unpickle` move arguments and results (`arguments`). This module must never
execute user code, import the modules named in `modules=`, or do I/O: it runs on the caller's thread inside
`submit`, whose cost is the client's throughput (`scripts/bench --only tiny,executor`).

Bodies are cached per `(func, depfuncs, modules)`: a hit is one dict lookup plus identity checks of the
globals the body was built from (module data excepted: it is read at each submit anyway) and of closure
cells pickled by value, so a name rebound since the last submit rebuilds the body; a closure that holds
data (a list, say) is never reused. Bound methods, partials and callable instances are not cached at all:
their state can change between submits and must travel as it is at each one (`Server.submit` sends a
bound method's instance as the first argument instead, as ppft does, so that the method's body stays
cached).
"""

from __future__ import annotations

import threading
import types
from collections.abc import Callable, Mapping
from operator import is_
from typing import Any

from ppft_protocol import FunctionBody

from .arguments import ShippingError, check_submit_args, pickle_args, unpickle
from .bodypickle import (
    BODY_PICKLE_PROTOCOL,
    cell_content,
)
from .builder import Entry, build, stateless
from .moduledata import ModuleData, Prepared

__all__ = [
    "BODY_PICKLE_PROTOCOL",
    "ModuleData",
    "ShippingError",
    "check_submit_args",
    "function_body",
    "function_job",
    "pickle_args",
    "unpickle",
]

_CACHE_SIZE = 4096


_cache: dict[object, Entry] = {}
_cache_lock = threading.Lock()


def function_body(
    func: Callable[..., Any],
    depfuncs: tuple[Any, ...] = (),
    modules: tuple[str, ...] = (),
    globals: Mapping[str, Any] | None = None,
) -> FunctionBody:
    """The `FunctionBody` that runs `func` on a worker, from the cache when nothing it used has changed.

    Its jobs need the module data `function_job` gives too, when the function reads some.
    Raises `TypeError` when `func` is not callable and `ShippingError` when something cannot be pickled.
    """
    return _entry(func, depfuncs, modules, globals or None).body


def function_job(
    func: Callable[..., Any],
    depfuncs: tuple[Any, ...],
    modules: tuple[str, ...],
    globals: Mapping[str, Any] | None,
    protocol: int,
) -> tuple[FunctionBody, Prepared | None]:
    """`function_body`, and the module data its jobs carry (None when it reads none), as it is now:
    `prepared.wrap(args, protocol)` gives the pickled arguments of each job of this submit."""
    if not globals:
        globals = None
    try:  # the cache hit, inline: this is every submit's path (`_entry` does the rest)
        if type(func) is _FunctionType and func.__name__ == "<lambda>":
            entry = None
        else:
            entry = _cache.get((func, depfuncs, modules, globals is None))
    except TypeError:
        entry = None
    if (
        entry is None
        or (entry.names and not all(map(is_, map(globals.get, entry.names), entry.objs)))  # type: ignore[union-attr]
        or (entry.fixed and not _fixed_unchanged(entry.fixed))
        or (entry.cells and not _cells_unchanged(entry.cells))
    ):
        entry = _entry(func, depfuncs, modules, globals)
    data = entry[5]  # .data (an index reads faster: this is every submit's path)
    if data is None:
        return entry[0], None
    now = data.values()
    if now is None:  # a data name now holds code, which travels in the body: build it again
        entry = _entry(func, depfuncs, modules, globals, rebuild=True)
        data = entry.data
        if data is None:
            return entry.body, None
        now = data.values(strict=False) or ({}, [])  # changed again meanwhile: what is data now
    return entry.body, data.prepare(now[0], now[1], protocol)


def _entry(
    func: Callable[..., Any],
    depfuncs: tuple[Any, ...],
    modules: tuple[str, ...],
    globals: Mapping[str, Any] | None,
    rebuild: bool = False,
) -> Entry:
    try:
        key: tuple[Any, ...]
        if type(func) is _FunctionType and func.__name__ == "<lambda>" and _plain_lambda(func):
            # `submit(lambda x: x + 1, ...)` in a loop makes a new function each time: key on its code
            key = (func.__code__, id(func.__globals__), func.__defaults__, depfuncs, modules, globals is None)
        else:
            key = (func, depfuncs, modules, globals is None)
        entry = _cache.get(key)
    except TypeError:  # an unhashable callable, or lists for tuples: build without caching
        return build(func, tuple(depfuncs), tuple(modules), globals)
    if (
        entry is not None
        and not rebuild
        and (not entry.names or all(map(is_, map(globals.get, entry.names), entry.objs)))  # type: ignore[union-attr]
        and (not entry.fixed or _fixed_unchanged(entry.fixed))
        and (not entry.cells or _cells_unchanged(entry.cells))
    ):
        return entry
    built = build(func, depfuncs, modules, globals)
    if _cacheable(func, depfuncs) and not built.cells_hold_data:
        with _cache_lock:
            _cache.pop(key, None)
            if len(_cache) >= _CACHE_SIZE:  # drop the oldest insertion: bounded, and hits stay lock-free
                del _cache[next(iter(_cache))]
            _cache[key] = built
    return built


_FunctionType = types.FunctionType


def _plain_lambda(func: types.FunctionType) -> bool:
    """Whether a lambda is all in its code, globals and defaults (so equal ones share one body)."""
    return func.__closure__ is None and func.__kwdefaults__ is None and not func.__dict__


def _fixed_unchanged(fixed: tuple[tuple[dict[str, Any], tuple[str, ...], tuple[object, ...]], ...]) -> bool:
    return all(all(map(is_, map(g.get, names), objs)) for g, names, objs in fixed)


def _cells_unchanged(cells: tuple[tuple[tuple[Any, ...], tuple[object, ...]], ...]) -> bool:
    return all(all(map(is_, map(cell_content, closure), objs)) for closure, objs in cells)


def _cacheable(func: object, depfuncs: tuple[Any, ...]) -> bool:
    """Whether `func`'s body may be reused: true for objects that carry no state of their own."""
    return stateless(func) and all(stateless(dep) for dep in depfuncs)
