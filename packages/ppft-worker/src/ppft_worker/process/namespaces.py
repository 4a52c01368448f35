"""A function body made a namespace to run in, and the words a job's failure is described with.

`make_namespace` turns the parts of a `FunctionBody` (digest, name, sources, imports, pickled part) into a
fresh module named `__main__` (so two functions of the same name never see each other's definitions)
holding `os` and `sys` (visible to ppft 1.7's jobs too, which ran in its worker module's globals), into which
it runs the imports, puts the pickled depfuncs, and executes the sources; a pickled callable is unpickled and
given the namespace's names as globals it lacks. It returns the namespace and the callable to run, or a
message that says what failed and what to do. The helpers below it describe a job's failure the same way
wherever it ran: its traceback without the runner's frame, arguments that do not unpickle, a value that
does not pickle.

Both job runners use it: `execute.JobRunner` in our worker processes, and `dask_runner` on dask workers,
where nothing of ppft is installed. So this module travels as text (`travel`) and must import nothing of
ppft but, where ppft is installed, the C pickler (`pickle` also loads `re` and `enum`, which a worker does not
load on its way to its first result); `dill` only on the paths that need it. It must stay valid Python 3.10,
never raise for anything a body or a job does, and never do I/O.
"""

from __future__ import annotations

import functools
import os
import sys
import types

TYPE_CHECKING = False
if TYPE_CHECKING:
    import pickle
    from collections.abc import Callable
    from typing import Any
elif __name__.startswith("ppft_worker."):  # installed: the C pickler alone
    from ppft_protocol.cpython import fast_pickle as pickle
else:  # travelling to a host where ppft may not be installed
    import pickle

__all__ = [
    "PENDING_SOURCES",
    "args_fallback",
    "cache_sources",
    "dill_loads",
    "job_traceback",
    "make_namespace",
    "safe_str",
    "type_name",
    "unknown_digest",
    "unpicklable_value",
]

PENDING_SOURCES: dict[str, str] = {}
"""Shipped sources by file name, waiting for `linecache` to be loaded (`cache_sources`)."""


def cache_sources() -> None:
    """Hand the shipped sources to `linecache`, once it is loaded, so tracebacks show their lines.

    `linecache` loads `tokenize` and `re`: a worker does not load it for that alone, but whatever loads it (a
    traceback, logging, the job itself) gets the sources from the next job on."""
    if PENDING_SOURCES:
        linecache = sys.modules.get("linecache")
        if linecache is not None:
            for filename, source in PENDING_SOURCES.items():
                linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)
            PENDING_SOURCES.clear()


def unknown_digest(digest: bytes) -> str:
    """The setup failure of a job whose function body never arrived."""
    return (
        f"function digest {digest.hex()} is unknown to this worker: its FunctionBody must be sent before the "
        "first job that uses it (a bug in the sender, not in the job)"
    )


def make_namespace(
    digest: bytes, name: str, sources: tuple[str, ...], imports: tuple[str, ...], pickled: bytes
) -> tuple[types.ModuleType, Callable[..., Any]] | str:
    """The namespace of a body and the callable to run in it, or a message saying why it cannot be built.

    While it is built, `sys.modules["__main__"]` is the namespace: pickles made with dill may refer to
    `__main__`, and must find this one."""
    namespace = types.ModuleType("__main__", f"namespace of the ppft function {name}")
    # ppft 1.7 ran jobs in its worker module's globals, where `os` and `sys` were imported; jobs that
    # use them without listing them in modules= keep working
    namespace.os = os  # type: ignore[attr-defined]
    namespace.sys = sys  # type: ignore[attr-defined]
    saved_main = sys.modules["__main__"]
    sys.modules["__main__"] = namespace
    try:
        result = _build(digest, name, sources, imports, pickled, namespace.__dict__)
    finally:
        sys.modules["__main__"] = saved_main
    return result if isinstance(result, str) else (namespace, result)


def _build(
    digest: bytes,
    name: str,
    sources: tuple[str, ...],
    imports: tuple[str, ...],
    pickled: bytes,
    ns: dict[str, Any],
) -> Callable[..., Any] | str:
    for entry in imports:
        failure = _run_import(entry, ns)
        if failure is not None:
            return failure
    main: object = None
    if pickled:
        try:
            loaded = _loads_body(pickled)
            if type(loaded) is tuple:  # (callable or None, {name: pickled depfunc})
                main, extras = loaded
                extras = dict(extras)
            else:
                extras = {}
                main = loaded
        except Exception as exc:  # noqa: BLE001 - reported in every result of this body
            return (
                f"the pickled part of function {name} cannot be unpickled on this worker: "
                f"{type(exc).__name__}: {exc}. A module it refers to must be installed here, and dill too "
                "when the caller used it"
            )
        ns.update(extras)
        for value in extras.values():
            _adopt_main_classes(_globals_of(value), ns)
    for index, source in enumerate(sources):
        failure = _run_source(digest, name, index, source, ns)
        if failure is not None:
            return failure
    if main is None:
        func = ns.get(name)
        if func is None:
            return f"the sources of function {name} define no {name!r} (a bug in the sender)"
    else:
        func = main
        g = _globals_of(func)
        if g is not None:
            for key, value in ns.items():
                if not key.startswith("__"):
                    g.setdefault(key, value)
            _adopt_main_classes(g, ns)
    if not callable(func):
        return f"{name} is a {type(func).__name__}, not a callable"
    return func  # type: ignore[no-any-return]


def _run_import(entry: str, ns: dict[str, Any]) -> str | None:
    line = entry.strip()
    if not (line.startswith("import ") or line.startswith("from ")):
        line = f"import {line}"  # "math", "os.path", "numpy as np"
    try:
        code = compile(line, "<ppft modules>", "exec", dont_inherit=True)
    except SyntaxError:
        return (
            f"modules= entry {entry!r} is neither a module name nor an import line; write e.g. 'math', "
            "'numpy as np' or 'from os import path'"
        )
    try:
        exec(code, ns)
    except ModuleNotFoundError as exc:
        missing = exc.name or str(exc)
        top = line.split()[1].split(".")[0]
        if missing.split(".")[0] == top:
            return (
                f"module {missing!r} listed in modules= ({entry!r}) is not installed on this worker; "
                "install it here or remove it from modules="
            )
        return (
            f"importing {entry!r} (listed in modules=) failed on this worker: it needs module {missing!r}, "
            "which is not installed here"
        )
    except Exception as exc:  # noqa: BLE001 - an import can raise anything; reported with the entry
        return f"importing {entry!r} (listed in modules=) failed on this worker: {type(exc).__name__}: {exc}"
    return None


def _run_source(digest: bytes, name: str, index: int, source: str, ns: dict[str, Any]) -> str | None:
    defined = _defined_name(source)
    what = f"{name}'s source {index + 1} ({defined or 'no def or class'})"
    filename = f"<ppft {digest.hex()[:12]} {defined or index}>"
    # tracebacks of the job then show the source lines, as they would in the caller's file
    PENDING_SOURCES[filename] = source
    cache_sources()
    try:
        code = compile(source, filename, "exec", dont_inherit=True)
    except (SyntaxError, ValueError) as exc:
        return (
            f"{what} does not compile on this worker (Python {sys.version.split()[0]}): "
            f"{type(exc).__name__}: {exc}"
        )
    try:
        exec(code, ns)
    except Exception as exc:  # noqa: BLE001 - the source's own error, reported with what to do
        return (
            f"executing {what} failed on this worker: {type(exc).__name__}: {exc}. Pass what it needs at "
            "definition time (base classes, decorators, default values) in depfuncs= or modules="
        )
    return None


def _defined_name(source: str) -> str:
    """The name of the first `def`, `async def` or `class` at the start of a line of `source`, or "" (a
    scan rather than a regular expression: `re` is not loaded on a worker's way to its first result)."""
    for line in source.splitlines():
        words = line.split(None, 2) if line[:1] in ("d", "c", "a") else ()
        if len(words) < 2:
            continue
        keyword, rest = words[0], words[1]
        if keyword == "async" and len(words) == 3 and words[1] == "def":
            rest = words[2]
        elif keyword not in ("def", "class"):
            continue
        found = ""
        for char in rest:
            if not (char.isalnum() or char == "_"):
                break
            found += char
        if found:
            return found
    return ""


def _globals_of(func: object) -> dict[str, Any] | None:
    """The globals dict of a pickled callable, unless it is a real module's (which must not be touched)."""
    while isinstance(func, (types.MethodType, functools.partial)):
        func = func.__func__ if isinstance(func, types.MethodType) else func.func
    g = getattr(func, "__globals__", None)
    if type(g) is not dict:
        return None
    name = g.get("__name__")
    module = sys.modules.get(name) if isinstance(name, str) else None
    if module is not None and getattr(module, "__dict__", None) is g:
        return None
    return g


def _adopt_main_classes(g: dict[str, Any] | None, ns: dict[str, Any]) -> None:
    """Let classes that dill recreated as `__main__.X` be found there, so their instances pickle by name."""
    if g is None:
        return
    for key, value in g.items():
        if isinstance(value, type) and value.__module__ == "__main__" and value.__qualname__ == key:
            ns.setdefault(key, value)


def _loads_body(data: bytes) -> object:
    try:
        return pickle.loads(data)
    except ModuleNotFoundError as exc:
        if exc.name != "__builtin__":
            raise
    return dill_loads(data)


def dill_loads(data: bytes | memoryview) -> object:
    """`dill.loads`, for the pickles that need dill's loader (a pickle naming `__builtin__`)."""
    import dill  # noqa: PLC0415 - only dill pickles that need its loader pay for it

    return dill.loads(bytes(data))


def args_fallback(name: str, job_id: int, exc: Exception, data: bytes | memoryview) -> tuple[bool, Any]:
    """After the plain pickle failed on a job's arguments: `(True, args)` when dill's loader reads them, else
    `(False, message)`."""
    try:
        return True, dill_loads(data)
    except Exception as dill_exc:  # noqa: BLE001 - the reason is reported in the result
        return False, (
            f"the arguments of job {job_id} (function {name}) cannot be unpickled on this worker: "
            f"{type(exc).__name__}: {exc}; dill: {type(dill_exc).__name__}: {dill_exc}. Every class they "
            "use must be importable here, or travel by value (defined in the caller's __main__) or as a "
            "depfunc"
        )


def unpicklable_value(name: str, job_id: int, value: object, exc: Exception, dill_exc: Exception) -> str:
    """Why the value a job returned could not be pickled, by `pickle` (`exc`) nor by dill (`dill_exc`)."""
    return (
        f"the value returned by {name} in job {job_id}, of type {type_name(type(value))}, could not be "
        f"pickled: pickle: {type(exc).__name__}: {exc}; dill: {type(dill_exc).__name__}: {dill_exc}. Return "
        "plain data or objects whose classes the caller can import"
    )


def job_traceback(exc: BaseException) -> str:
    """The job's traceback as the worker would print it, without the runner's own frame; never raises."""
    import traceback  # noqa: PLC0415 - a job that raises pays for it, not every worker's start-up

    tb = exc.__traceback__
    tb = tb.tb_next if tb is not None else None  # drop the runner's own frame
    cache_sources()
    try:
        return "".join(traceback.format_exception(type(exc), exc, tb))
    except Exception as fmt_exc:  # noqa: BLE001 - a broken __str__ must not lose the result
        return f"{type_name(type(exc))}: <traceback unavailable: {fmt_exc!r}>\n"


def type_name(cls: type) -> str:
    """ "module.QualName": how a result names the type of a job's exception."""
    return f"{cls.__module__}.{cls.__qualname__}"


def safe_str(exc: BaseException) -> str:
    """`str(exc)`, or what went wrong making it."""
    try:
        return str(exc)
    except Exception as str_exc:  # noqa: BLE001 - a broken __str__ must not lose the result
        return f"<str() of the {type(exc).__name__} failed: {str_exc!r}>"
