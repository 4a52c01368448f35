"""Capturing a job's function on the client: source where it can be verified, a pickle where it cannot.

`function_body` turns `submit`'s `func`, `depfuncs`, `modules` and `globals` into one content-addressed
`FunctionBody`; `pickle_args` and `unpickle` move arguments and results. This module must never execute
user code (sources are compiled to be checked, never run), import the modules named in `modules=`, or do
I/O: it runs on the caller's thread inside `submit`, whose cost is the client's throughput.

Rules, in the order they are tried:

- A plain top-level `def` (no closure, no decorator, literal defaults, `__qualname__ == __name__`) whose
  source `inspect` finds ships as source, as ppft 1.7 does, but only after the source is *verified*
  (`ppft_client.sources`): it is compiled and the code object it defines must match `func.__code__`
  (bytecode, names, constants, nested code). A source edited since import, an earlier definition of the
  same name in a REPL or a notebook cell fails the check and the function travels pickled instead, so a
  worker never runs other code than the caller's. Annotations are never evaluated on the worker (the
  source gets `from __future__ import annotations`), so they need not be importable there.
- Everything else (lambdas, closures, nested functions, methods, builtins, `functools.partial`, callable
  instances) is pickled: by the standard pickle when the callable is importable by reference from a module
  other than `__main__` (smaller, and the worker needs no dill), else by `dill` by value.
- A depfunc with verified source (function or class) ships its source before the function's, as ppft's do.
  A depfunc without one (a builtin, a lambda, a decorated function) cannot be "imported", so it travels
  pickled in a `{name: object}` dict that the worker puts into the function's namespace. The name is the one
  the function uses for it (found in the function's globals), else the object's `__name__`. A class that
  is importable from a module other than `__main__` travels in that dict by reference rather than as
  source: its instances in arguments and results must be of one class on both sides.
- `globals=` (e.g. `globals()`) contributes only what the function, its depfuncs and what they use in turn
  actually reference (the names in their code objects): a module becomes an import line
  (`import numpy as np` when the name differs), a function or class becomes a depfunc; one importable
  from a module other than `__main__` (`from os.path import join`) travels by reference, since a library
  function's source alone would miss its module's globals. Nothing else in the dict is looked at, so
  passing a whole module's globals on every submit stays cheap.

The pickled payload (`FunctionBody.pickled`) is the pickle of the callable itself when there are no pickled
depfuncs; otherwise it is the pickle of a plain tuple `(callable or None, {name: object})`, `None` meaning
that the function is the last source. A plain tuple is never callable, so the two forms cannot be confused.

Bodies are cached per `(func, depfuncs, modules)`: a hit is one dict lookup plus identity checks of the
`globals=` entries the body was built from and, for callables pickled by value, of the globals and closure
cells that were pickled with them, so a name rebound since the last submit rebuilds the body. Objects
mutated in place are not detected (rebind the name to a new object instead). Bound methods, partials and
callable instances are not cached at all: their state can change between submits and must travel as it is
at each one (`Server.submit` sends a bound method's instance as the first argument instead, as ppft does,
so that the method's body stays cached).
"""

from __future__ import annotations

import functools
import logging
import pickle
import sys
import threading
import types
from collections.abc import Callable, Iterable, Mapping
from operator import is_
from typing import Any, NamedTuple

from ppft_protocol import FunctionBody
from ppft_protocol.bodies import function_digest

from .arguments import ShippingError, check_submit_args, pickle_args, unpickle
from .sources import class_source, code_names, function_source

__all__ = [
    "BODY_PICKLE_PROTOCOL",
    "ShippingError",
    "check_submit_args",
    "function_body",
    "pickle_args",
    "unpickle",
]

log = logging.getLogger("ppft.client")

BODY_PICKLE_PROTOCOL = 5
"""Pickle protocol of function payloads: the highest one every supported Python (3.10+) reads."""

_CACHE_SIZE = 4096


class _Entry(NamedTuple):
    body: FunctionBody
    names: tuple[str, ...]  # entries of the globals= dict the body was built from ...
    objs: tuple[object, ...]  # ... and what they held (None: absent)
    fixed: tuple[tuple[dict[str, Any], tuple[str, ...], tuple[object, ...]], ...]  # globals pickled by value
    cells: tuple[tuple[tuple[Any, ...], tuple[object, ...]], ...]  # closure cells pickled by value


_cache: dict[object, _Entry] = {}
_cache_lock = threading.Lock()
_EMPTY = object()  # content of an empty closure cell


def function_body(
    func: Callable[..., Any],
    depfuncs: tuple[Any, ...] = (),
    modules: tuple[str, ...] = (),
    globals: Mapping[str, Any] | None = None,
) -> FunctionBody:
    """The `FunctionBody` that runs `func` on a worker, from the cache when nothing it used has changed.

    Raises `TypeError` when `func` is not callable and `ShippingError` when something cannot be pickled.
    """
    if not globals:
        globals = None
    try:
        key: tuple[Any, ...]
        if type(func) is _FunctionType and func.__name__ == "<lambda>" and _plain_lambda(func):
            # `submit(lambda x: x + 1, ...)` in a loop makes a new function each time: key on its code
            key = (func.__code__, id(func.__globals__), func.__defaults__, depfuncs, modules, globals is None)
        else:
            key = (func, depfuncs, modules, globals is None)
        entry = _cache.get(key)
    except TypeError:  # an unhashable callable, or lists for tuples: build without caching
        return _build(func, tuple(depfuncs), tuple(modules), globals).body
    if (
        entry is not None
        and (not entry.names or all(map(is_, map(globals.get, entry.names), entry.objs)))  # type: ignore[union-attr]
        and (not entry.fixed or _fixed_unchanged(entry.fixed))
        and (not entry.cells or _cells_unchanged(entry.cells))
    ):
        return entry.body
    built = _build(func, depfuncs, modules, globals)
    if _cacheable(func, depfuncs):
        with _cache_lock:
            _cache.pop(key, None)
            if len(_cache) >= _CACHE_SIZE:  # drop the oldest insertion: bounded, and hits stay lock-free
                del _cache[next(iter(_cache))]
            _cache[key] = built
    return built.body


_FunctionType = types.FunctionType


def _plain_lambda(func: types.FunctionType) -> bool:
    """Whether a lambda is all in its code, globals and defaults (so equal ones share one body)."""
    return func.__closure__ is None and func.__kwdefaults__ is None and not func.__dict__


def _fixed_unchanged(fixed: tuple[tuple[dict[str, Any], tuple[str, ...], tuple[object, ...]], ...]) -> bool:
    return all(all(map(is_, map(g.get, names), objs)) for g, names, objs in fixed)


def _cells_unchanged(cells: tuple[tuple[tuple[Any, ...], tuple[object, ...]], ...]) -> bool:
    return all(all(map(is_, map(_cell_content, closure), objs)) for closure, objs in cells)


def _cell_content(cell: Any) -> object:
    try:
        return cell.cell_contents
    except ValueError:  # a cell not yet assigned
        return _EMPTY


def _cacheable(func: object, depfuncs: tuple[Any, ...]) -> bool:
    """Whether `func`'s body may be reused: true for objects that carry no state of their own."""
    return _stateless(func) and all(_stateless(dep) for dep in depfuncs)


def _stateless(obj: object) -> bool:
    if isinstance(obj, (types.FunctionType, type)):
        return True
    if isinstance(obj, types.BuiltinFunctionType):  # math.sin, min: bound to a module, not to an instance
        owner = obj.__self__
        return owner is None or isinstance(owner, types.ModuleType)
    return False


# -- building a body ------------------------------------------------------------------------------------


class _Builder:
    """One capture: collects sources, imports and pickled depfuncs, and what the cache must watch."""

    def __init__(self, globals_: Mapping[str, Any] | None) -> None:
        self.globals = globals_
        self.sources: list[str] = []
        self.imports: dict[str, None] = {}  # an ordered set
        self.extras: dict[str, Any] = {}
        self.seen: set[int] = set()
        self.looked_up: dict[str, object] = {}  # globals= entries read, and what they held
        self.pending_names: list[str] = []
        self.own_globals: list[tuple[Iterable[str], dict[str, Any]]] = []  # shipped code, its module dict
        self.own_read: list[tuple[dict[str, Any], tuple[str, ...], tuple[object, ...]]] = []  # for the cache

    def add_dep(self, dep: Any, name: str | None, explicit: bool) -> None:
        """Ship `dep` as verified source, else pickled under `name`.

        Classes importable from a module other than `__main__`, and anything `globals=` brought in from
        such a module, travel by reference instead (the worker imports them): a library function's source
        would miss its module's globals, and a class must be the same on both sides for its instances in
        arguments and results to be of it.
        """
        if id(dep) in self.seen:
            return
        self.seen.add(id(dep))
        by_reference = (isinstance(dep, type) or not explicit) and _importable(dep)
        source = None
        if not by_reference:
            source = class_source(dep) if isinstance(dep, type) else function_source(dep)
        if source is None:
            self.extras[name or str(getattr(dep, "__name__", type(dep).__name__))] = dep
            if not by_reference:
                self.want_names(_code_names_of(dep))
            return
        if isinstance(dep, type):  # the class's own bases from the same module must exist first
            for base in reversed(dep.__mro__[1:]):
                if base.__module__ == dep.__module__ and base is not object and id(base) not in self.seen:
                    self.add_dep(base, base.__name__, True)
        self.sources.append(source.text)
        self.want_names(source.names)
        self.note_own_globals(dep, source.names)

    def note_own_globals(self, obj: Any, names: Iterable[str]) -> None:
        own = getattr(obj, "__globals__", None)
        if isinstance(own, dict):
            self.own_globals.append((names, own))

    def ship_own_globals(self) -> None:
        """What shipped source uses from its own module travels with it, as ppft 1.7 (dill.source) did.

        Modules become imports (ppft 1.7 made users list them in `modules=`); functions and classes of
        that module ship as source, transitively, so a job may call its module's helpers without
        `depfuncs=` (what pathos users rely on); names bound to objects imported from a library travel
        by reference; immutable constants (numbers, strings, bytes, tuples of them) are pickled along.
        Mutable objects do not travel: a copy on the worker would silently diverge from the caller's.
        Every name read is watched by the cache, so rebinding it makes the next submit ship it anew."""
        i = 0
        while i < len(self.own_globals):  # grows as shipped helpers bring their own names
            names, own = self.own_globals[i]
            i += 1
            module_name = own.get("__name__")
            read: dict[str, object] = {}
            for name in names:
                if name not in own or name == "__builtins__":
                    continue
                obj = own[name]
                read[name] = obj
                if isinstance(obj, types.ModuleType):
                    self.add_module(name, obj)
                elif isinstance(obj, (types.FunctionType, type)):
                    if getattr(obj, "__name__", None) != name:  # an alias: bind the name itself
                        self.extras.setdefault(name, obj)
                    else:
                        self.add_dep(obj, name, getattr(obj, "__module__", None) == module_name)
                elif isinstance(obj, types.BuiltinFunctionType) and _stateless(obj):
                    self.add_dep(obj, name, False)
                elif _immutable_constant(obj):
                    self.extras.setdefault(name, obj)
            if read:
                self.own_read.append((own, tuple(read), tuple(read.values())))

    def want_names(self, names: Iterable[str]) -> None:
        if self.globals is not None:
            self.pending_names.extend(names)

    def resolve_globals(self) -> None:
        """Turn the names the collected code uses into imports and depfuncs, transitively."""
        g = self.globals
        if g is None:
            return
        looked_up = self.looked_up
        while self.pending_names:
            name = self.pending_names.pop(0)
            if name in looked_up or name == "__builtins__":
                continue
            obj = g.get(name)
            looked_up[name] = obj
            if isinstance(obj, types.ModuleType):
                self.add_module(name, obj)
            elif isinstance(obj, (types.FunctionType, type)) or (
                isinstance(obj, types.BuiltinFunctionType) and _stateless(obj)
            ):
                self.add_dep(obj, name, False)

    def add_module(self, name: str, module: types.ModuleType) -> None:
        real = module.__name__
        if real == "__main__":
            return
        self.imports[real if real == name else f"import {real} as {name}"] = None
        self.add_submodules(module)

    def add_submodules(self, module: types.ModuleType) -> None:
        # `xml.etree.ElementTree.parse` needs `import xml.etree.ElementTree`, not only `import xml`
        for attr in list(self.pending_names) + list(self.looked_up):
            sub = getattr(module, attr, None)
            if (
                isinstance(sub, types.ModuleType)
                and sub.__name__ == f"{module.__name__}.{attr}"
                and sub.__name__ not in self.imports
            ):
                self.imports[sub.__name__] = None
                self.add_submodules(sub)


def _build(
    func: Any, depfuncs: tuple[Any, ...], modules: tuple[str, ...], globals_: Mapping[str, Any] | None
) -> _Entry:
    if not callable(func):
        raise TypeError(f"func argument must be a function or another callable, got {type(func).__name__}")
    b = _Builder(globals_)
    b.seen.add(id(func))
    main = function_source(func)
    if main is not None:
        used: Iterable[str] = main.names
    else:  # a callable pickled by reference needs nothing from globals=: its module provides it
        used = () if _importable(func) else _code_names_of(func)
    b.want_names(used)
    func_globals = getattr(func, "__globals__", None)
    for dep in depfuncs:
        b.add_dep(dep, _binding_name(dep, func_globals, used), True)
    if main is not None:
        b.note_own_globals(func, main.names)
    b.resolve_globals()
    b.ship_own_globals()
    imports = tuple(dict.fromkeys((*modules, *b.imports)))
    if main is not None:
        name = func.__name__
        sources = (*b.sources, main.text)
        payload: object = (None, b.extras) if b.extras else None
    else:
        name = _describe(func)
        sources = tuple(b.sources)
        payload = (func, b.extras) if b.extras else func
    pickled = b"" if payload is None else _pickle_payload(payload, name)
    body = FunctionBody(_digest(name, sources, imports, pickled), name, sources, imports, pickled)
    names = tuple(b.looked_up)
    objs = tuple(b.looked_up.values())
    pickled_objs = [func, *b.extras.values()] if main is None else list(b.extras.values())
    by_value = [obj for obj in pickled_objs if not _importable(obj)]
    fixed, cells = _pickled_state(by_value, pickled)
    return _Entry(body, names, objs, fixed + tuple(b.own_read), cells)


_CONSTANT_TYPES = (bool, int, float, complex, str, bytes, type(None))


def _immutable_constant(obj: object, depth: int = 0) -> bool:
    """Numbers, strings, bytes, None, and tuples/frozensets of them: safe to copy to a worker."""
    if isinstance(obj, _CONSTANT_TYPES):
        return True
    if isinstance(obj, (tuple, frozenset)) and depth < 3:
        return all(_immutable_constant(item, depth + 1) for item in obj)
    return False


def _importable(obj: Any) -> bool:
    """Whether pickle can refer to `obj` by module and name, from a module other than `__main__`."""
    module_name = getattr(obj, "__module__", None)
    qualname = getattr(obj, "__qualname__", None)
    if not isinstance(module_name, str) or module_name == "__main__" or not isinstance(qualname, str):
        return False
    target: object = sys.modules.get(module_name)
    for part in qualname.split("."):
        target = getattr(target, part, None)
    return target is obj


def _binding_name(dep: Any, func_globals: dict[str, Any] | None, used: Iterable[str]) -> str | None:
    """The name under which the function refers to `dep`, so a pickled depfunc lands under that name."""
    if func_globals is not None:
        for name in used:
            if func_globals.get(name) is dep:
                return name
    return getattr(dep, "__name__", None)


def _describe(func: Any) -> str:
    """A readable name for a pickled callable, for logs and error messages (not used to look it up)."""
    if isinstance(func, functools.partial):
        return f"partial({_describe(func.func)})"
    qualname = getattr(func, "__qualname__", None)
    if not isinstance(qualname, str):
        return f"{type(func).__module__}.{type(func).__qualname__} instance"
    module = getattr(func, "__module__", None)
    return f"{module}.{qualname}" if module else qualname


def _digest(name: str, sources: tuple[str, ...], imports: tuple[str, ...], pickled: bytes) -> bytes:
    """SHA-256 over an unambiguous encoding (every field and item length-prefixed): the protocol's one
    definition, which every receiver checks (`ppft_protocol.bodies`)."""
    return function_digest(name, sources, imports, pickled)


# -- names and descriptions ---------------------------------------------------------------------------


def _code_names_of(obj: Any) -> tuple[str, ...]:
    """The names a pickled callable's code uses (for `globals=`), through methods and partials."""
    while True:
        if isinstance(obj, functools.partial):
            obj = obj.func
        elif isinstance(obj, types.MethodType):
            obj = obj.__func__
        else:
            break
    code = getattr(obj, "__code__", None)
    return tuple(code_names(code)) if isinstance(code, types.CodeType) else ()


# -- pickling -------------------------------------------------------------------------------------------


def _pickle_payload(payload: object, name: str) -> bytes:
    """The stdlib pickle when it refers only to importable objects outside `__main__`, else dill's."""
    try:
        data = pickle.dumps(payload, BODY_PICKLE_PROTOCOL)
    except Exception:  # noqa: BLE001 - any failure of the fast path means: try dill, which raises clearly
        data = None
    if data is not None and b"__main__" not in data:
        return data
    import dill  # noqa: PLC0415 - only paid for by callables that need it

    log.debug("function %s: pickled by value with dill", name)

    try:
        return bytes(dill.dumps(payload, protocol=BODY_PICKLE_PROTOCOL, recurse=True))
    except Exception as exc:
        raise ShippingError(
            f"function {name!r} cannot be sent to a worker: neither pickle nor dill can serialize it "
            f"({type(exc).__name__}: {exc}); define it at the top level of a module, or pass what it "
            "captures as arguments"
        ) from exc


def _pickled_state(
    by_value: list[Any], pickled: bytes
) -> tuple[
    tuple[tuple[dict[str, Any], tuple[str, ...], tuple[object, ...]], ...],
    tuple[tuple[tuple[Any, ...], tuple[object, ...]], ...],
]:
    """The globals and closure cells dill pickled with the callables, for the cache to watch."""
    if b"dill._dill" not in pickled:
        return (), ()
    fixed: list[tuple[dict[str, Any], tuple[str, ...], tuple[object, ...]]] = []
    cells: list[tuple[tuple[Any, ...], tuple[object, ...]]] = []
    seen: set[int] = set()
    todo = list(by_value)
    while todo:
        obj = todo.pop()
        while isinstance(obj, (functools.partial, types.MethodType)):
            obj = obj.func if isinstance(obj, functools.partial) else obj.__func__
        if type(obj) is not types.FunctionType or id(obj) in seen:
            continue
        seen.add(id(obj))
        g = obj.__globals__
        names = tuple(n for n in code_names(obj.__code__) if n in g)
        if names:
            values = tuple(g[n] for n in names)
            fixed.append((g, names, values))
            todo.extend(v for v in values if type(v) is types.FunctionType)
        if obj.__closure__:
            contents = tuple(map(_cell_content, obj.__closure__))
            cells.append((obj.__closure__, contents))
            todo.extend(v for v in contents if type(v) is types.FunctionType)
    return tuple(fixed), tuple(cells)
