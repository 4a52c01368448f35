"""Building a job's `FunctionBody` from `submit`'s arguments: source where it can be verified, a pickle where
it cannot.

Rules, in the order they are tried:

- A plain top-level `def` (no closure, no decorator, literal defaults, `__qualname__ == __name__`) whose
  source `inspect` finds ships as source, as ppft 1.7 does, but only after the source is *verified*
  (`ppft_client.shipping.sources`): it is compiled and the code object it defines must match `func.__code__`
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
- What shipped code (the function, its depfuncs, and what they use in turn) reads from its own module
  travels with it (`_Builder.ship_own_globals`): modules as imports, functions and classes as more
  depfuncs, immutable constants in the body, and every other value (a dict, a list, an instance) as
  module data, read and pickled at each submit and carried by each job (`moduledata`), so a job sees the
  values as they were when it was submitted. `globals=` (e.g. `globals()`) adds the modules, functions and
  classes it names that the function's module lacks; nothing else in the dict is looked at, so passing a
  whole module's globals on every submit stays cheap. Only names used as globals count (`ORDER.index`
  reads `ORDER`, not a global `index`). Callables pickled by value carry their code, never their
  module's globals (`bodypickle`): those are found and shipped by the same rule.

The pickled payload (`FunctionBody.pickled`) is the pickle of the callable itself when there are no pickled
depfuncs; otherwise it is the pickle of a plain tuple `(callable or None, {name: object})`, `None` meaning
that the function is the last source. A plain tuple is never callable, so the two forms cannot be confused.

This module must never execute user code (sources are compiled to be checked, never run), import the modules
named in `modules=`, or do I/O. Its bodies are cached by `functions`, which says when one may be reused.
"""

from __future__ import annotations

import functools
import types
from collections.abc import Iterable, Mapping
from typing import Any, NamedTuple

from ppft_protocol import FunctionBody
from ppft_protocol.bodies import function_digest

from .bodypickle import (
    by_value_code,
    immutable_constant,
    importable,
    pickle_payload,
    pickled_cells,
)
from .moduledata import ModuleData
from .sources import (
    class_globals,
    class_source,
    code_names,
    function_source,
    global_reads,
    global_writes,
    is_builtin_name,
)

__all__ = ["Entry", "build", "stateless"]


class Entry(NamedTuple):
    body: FunctionBody
    names: tuple[str, ...]  # entries of the globals= dict the body was built from ...
    objs: tuple[object, ...]  # ... and what they held (None: absent)
    fixed: tuple[tuple[dict[str, Any], tuple[str, ...], tuple[object, ...]], ...]  # module globals it used
    cells: tuple[tuple[tuple[Any, ...], tuple[object, ...]], ...]  # closure cells pickled by value
    data: ModuleData | None  # module data its jobs carry
    cells_hold_data: bool  # a closure pickled by value holds data: never reuse the body (it may change)


# -- building a body ------------------------------------------------------------------------------------


class _Builder:
    """One capture: collects sources, imports and pickled depfuncs, and what the cache must watch."""

    def __init__(self, globals_: Mapping[str, Any] | None) -> None:
        self.globals = globals_
        self.sources: list[str] = []
        self.defined: dict[str, Any] = {}  # what the sources define in the worker's namespace
        self.imports: dict[str, None] = {}  # an ordered set
        self.extras: dict[str, Any] = {}
        self.seen: set[int] = set()
        self.looked_up: dict[str, object] = {}  # globals= entries read, and what they held
        self.pending_names: list[str] = []
        # shipped code, its module dict, the names it reads as globals (None: unknown, take `names`)
        self.own_globals: list[tuple[Iterable[str], dict[str, Any], frozenset[str] | None]] = []
        self.written: set[str] = set()  # globals the shipped code assigns: per job, even constants
        self.constants: dict[str, dict[str, Any]] = {}  # constants put in extras, and their module dict
        self.own_read: list[tuple[dict[str, Any], tuple[str, ...], tuple[object, ...]]] = []  # for the cache
        self.data: dict[str, dict[str, Any]] = {}  # module data the jobs carry: name -> dict it is read from
        self.by_value: list[Any] = []  # callables and classes pickled by value, for note_by_value
        self.pickled_main: object = None  # the job's function, when it travels pickled

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
        by_reference = (isinstance(dep, type) or not explicit) and importable(dep)
        source = None
        if not by_reference:
            source = class_source(dep) if isinstance(dep, type) else function_source(dep)
        if source is None:
            self.extras[name or str(getattr(dep, "__name__", type(dep).__name__))] = dep
            if not by_reference:
                self.want_names(_code_names_of(dep))
                self.by_value.append(dep)
            return
        if isinstance(dep, type):  # the class's own bases from the same module must exist first
            for base in reversed(dep.__mro__[1:]):
                if base.__module__ == dep.__module__ and base is not object and id(base) not in self.seen:
                    self.add_dep(base, base.__name__, True)
        self.sources.append(source.text)
        self.defined[dep.__name__] = dep
        self.want_names(source.names)
        if isinstance(dep, type):
            self.note_own_globals(class_globals(dep), source.names, source.reads)
        else:
            self.note_own_globals(dep.__globals__, source.names, global_reads(dep.__code__))
            self.written.update(global_writes(dep.__code__))

    def note_own_globals(
        self, own: object, names: Iterable[str], reads: frozenset[str] | None = None
    ) -> None:
        if isinstance(own, dict):
            self.own_globals.append((names, own, reads))

    def note_by_value(self) -> None:
        """What callables pickled by value read from their modules travels as for shipped sources: the
        pickle carries their code, never their globals (`bodypickle`)."""
        while self.by_value:
            roots, self.by_value = self.by_value, []
            for obj in by_value_code(roots):
                if isinstance(obj, type):
                    continue  # its methods are in the list
                code = obj.__code__
                self.note_own_globals(obj.__globals__, code_names(code), global_reads(code))
                self.written.update(global_writes(code))

    def ship_own_globals(self) -> None:
        """What shipped code uses from its own module travels with it, as ppft 1.7 (dill.source) did.

        Modules become imports (ppft 1.7 made users list them in `modules=`); functions and classes of
        that module ship as source, transitively, so a job may call its module's helpers without
        `depfuncs=` (what pathos users rely on); names bound to objects imported from a library travel
        by reference; immutable constants (numbers, strings, bytes, tuples of them) travel in the body.
        Every other value read as a global (a dict, a list, an instance) is module data: it travels
        with each job, as it is at each submit (`moduledata`). Every name read but data is watched by
        the cache, so rebinding it makes the next submit build the body anew."""
        i = 0
        while True:
            self.note_by_value()
            if i >= len(self.own_globals):
                break
            names, own, reads = self.own_globals[i]  # grows as shipped helpers bring their own names
            i += 1
            module_name = own.get("__name__")
            read: dict[str, object] = {}
            for name in names:
                if name.startswith("__") and name.endswith("__"):  # __name__, __file__: the worker's own
                    continue
                obj = own.get(name, _ABSENT)
                if obj is _ABSENT:
                    if reads is not None and name in reads and not is_builtin_name(own, name):
                        read[name] = None  # defined later, maybe: its arrival must rebuild the body
                    continue
                if isinstance(obj, types.ModuleType):
                    self.add_module(name, obj)
                elif isinstance(obj, (types.FunctionType, type)):
                    if obj is self.pickled_main:  # a pickled function that calls itself by its name
                        self.extras.setdefault(name, obj)
                    elif getattr(obj, "__name__", None) != name:  # an alias: bind the name itself
                        self.extras.setdefault(name, obj)
                        if not importable(obj):
                            self.by_value.append(obj)
                    else:
                        self.add_dep(obj, name, getattr(obj, "__module__", None) == module_name)
                elif isinstance(obj, types.BuiltinFunctionType) and stateless(obj):
                    self.add_dep(obj, name, False)
                elif immutable_constant(obj) and name not in self.written:
                    self.extras.setdefault(name, obj)
                    self.constants.setdefault(name, own)
                elif reads is None or name in reads:
                    self.data.setdefault(name, own)
                    continue  # not watched: its value is read at every submit
                else:
                    continue
                read[name] = obj
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
                isinstance(obj, types.BuiltinFunctionType) and stateless(obj)
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

    def module_data(self, function: str) -> ModuleData | None:
        """The module data the jobs carry: what `ship_own_globals` found, less what the body defines."""
        for name in self.written.intersection(self.constants):  # a job may rebind it: per job, not shared
            del self.extras[name]
            self.data.setdefault(name, self.constants[name])
        defined = {**self.extras, **self.defined}
        names = [name for name in self.data if name not in defined]
        if not names:
            return None
        by_dict: dict[int, tuple[dict[str, Any], list[str]]] = {}
        for name in names:
            own = self.data[name]
            by_dict.setdefault(id(own), (own, []))[1].append(name)
        reads = tuple((own, tuple(group)) for own, group in by_dict.values())
        shipped = {name: obj for name, obj in defined.items() if isinstance(obj, (type, types.FunctionType))}
        return ModuleData(function, reads, shipped)


_ABSENT = object()


def build(
    func: Any, depfuncs: tuple[Any, ...], modules: tuple[str, ...], globals_: Mapping[str, Any] | None
) -> Entry:
    if not callable(func):
        raise TypeError(f"func argument must be a function or another callable, got {type(func).__name__}")
    b = _Builder(globals_)
    b.seen.add(id(func))
    main = function_source(func)
    if main is not None:
        used: Iterable[str] = main.names
    else:  # a callable pickled by reference needs nothing from globals=: its module provides it
        used = () if importable(func) else _code_names_of(func)
    b.want_names(used)
    func_globals = getattr(func, "__globals__", None)
    for dep in depfuncs:
        b.add_dep(dep, _binding_name(dep, func_globals, used), True)
    if main is not None:
        b.defined[func.__name__] = func
        b.note_own_globals(func.__globals__, main.names, global_reads(func.__code__))
        b.written.update(global_writes(func.__code__))
    elif not importable(func):
        b.by_value.append(func)
        b.pickled_main = func
    b.resolve_globals()
    b.ship_own_globals()
    b.resolve_globals()  # names that shipped helpers brought
    imports = tuple(dict.fromkeys((*modules, *b.imports)))
    name = func.__name__ if main is not None else _describe(func)
    data = b.module_data(name)
    if main is not None:
        sources = (*b.sources, main.text)
        payload: object = (None, b.extras) if b.extras else None
    else:
        sources = tuple(b.sources)
        payload = (func, b.extras) if b.extras else func
    pickled = b"" if payload is None else pickle_payload(payload, name)
    body = FunctionBody(_digest(name, sources, imports, pickled), name, sources, imports, pickled)
    names = tuple(b.looked_up)
    objs = tuple(b.looked_up.values())
    pickled_objs = [func, *b.extras.values()] if main is None else list(b.extras.values())
    cells, cells_hold_data = pickled_cells(pickled_objs, pickled)
    return Entry(body, names, objs, tuple(b.own_read), cells, data, cells_hold_data)


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


def stateless(obj: object) -> bool:
    """Whether `obj` carries no state of its own (a function, a class, a builtin of a module)."""
    if isinstance(obj, (types.FunctionType, type)):
        return True
    if isinstance(obj, types.BuiltinFunctionType):  # math.sin, min: bound to a module, not to an instance
        owner = obj.__self__
        return owner is None or isinstance(owner, types.ModuleType)
    return False
