"""Running jobs in a worker: function bodies become namespaces, jobs become results.

`JobRunner` keeps the `FunctionBody`s it was given and, on the first job that needs one, builds its
namespace: a fresh module named `__main__` per digest (so two functions of the same name never see each
other's definitions) holding `os` and `sys` (visible to ppft 1.7's jobs too, which ran in its worker
module's globals), into which it runs the imports, puts the pickled depfuncs, and executes the sources;
a pickled callable is unpickled and given the namespace's names as globals it lacks. A job then runs with
`sys.modules["__main__"]` pointing at its namespace, so that classes defined by shipped sources pickle by
reference as `__main__.Foo` and the caller resolves them to its own `__main__.Foo`, as with ppft 1.7; and so
that the module data a job's arguments carry (`ppft_client.moduledata`) lands in that namespace as they are
unpickled, fresh for each job. A job's `NameError` for a global the caller could not send says why. A value
the plain pickle refuses because it holds a `__main__` class this namespace lacks (one that came by value,
with dill, in the arguments) is pickled with such classes referred to by name all the same, so it comes
back as the caller's class too; dill is the last resort.

Each body is checked against its digest first: one that does not hash to its digest is refused, and every
job of that digest fails with a setup error naming the mismatch. On a version-2 link the bodies kept (and
their namespaces) stay within `ppft_protocol.bodies.BODY_BUDGET`, by the rule the sender counts too: the
sender sends a body again once the rule has made this side forget it.

This module must never do I/O of its own (the caller owns pipes and sockets), raise for anything a job does
(a job's exception, `SystemExit` and `KeyboardInterrupt` included, is its result), or let a broken body
affect another one. `run` is the hot path of a worker (about 100,000 tiny jobs/s): no syscall beyond the
clock reads it reports, no lock, no allocation it can avoid; the rare paths live in helpers.

Result conventions: a job's exception is described by its type name ("module.QualName"), message and remote
traceback (the runner's own frame removed), and pickled so that the caller rebuilds it as itself, with its
attributes, chain and notes, whatever its `__init__` takes (`ppft_worker.picklers`).
A failure to set the job up (unknown digest, a source that does not compile, a module that does not import,
arguments that do not unpickle) is a `JobSetupError`, and a return value that cannot be pickled an
`UnpicklableResultError`: both are described the same way, so the caller re-raises them like any other.
"""

from __future__ import annotations

import functools
import os
import sys
import types
from time import perf_counter, process_time

from ppft_protocol import FunctionBody, Job, PPFTError, Result, printable
from ppft_protocol.cpython import fast_pickle as pickle  # the C pickler alone: `pickle` loads `re`, `enum`

from .bodycache import BodyCache
from .capture import OutputCapture

TYPE_CHECKING = False
if TYPE_CHECKING:
    import logging
    from collections.abc import Callable
    from typing import Any

__all__ = ["JobRunner", "JobSetupError", "UnpicklableResultError"]

_CPU_REUSE_WINDOW = 20e-6
"""Seconds: a job starting this soon after the previous one ended reuses that end's CPU clock reading as its
start, which saves one `process_time` syscall (about half a microsecond) per job in a busy worker. Its
cpu_time then also counts the runner's own microseconds since the previous job."""

_new_tuple = tuple.__new__  # builds a Result without NamedTuple.__new__'s Python-level call
_pending_sources: dict[str, str] = {}  # filename -> source, for linecache once something loads it


def _log() -> logging.Logger:
    """The "ppft.worker" logger; `logging` is loaded on first use, off a worker's way to its first result."""
    import logging  # noqa: PLC0415

    return logging.getLogger("ppft.worker")


def _cache_sources() -> None:
    """Hand the shipped sources to `linecache`, once loaded, so tracebacks show their lines.

    `linecache` loads `tokenize` and `re` (4 ms): a worker does not load it for that alone, but whatever
    loads it (a traceback, logging, the job itself) gets the sources from the next job on.
    """
    linecache = sys.modules.get("linecache")
    if linecache is not None:
        for filename, source in _pending_sources.items():
            linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)
        _pending_sources.clear()


class JobSetupError(PPFTError):
    """The worker could not set a job up: its function body (unknown, not compiling, an import failing)
    or its arguments (not unpickling). The message says which and what to do."""


class UnpicklableResultError(PPFTError):
    """A job ran, but the value it returned can be pickled neither by `pickle` nor by `dill`."""


class JobRunner:
    """Runs jobs in this process, for the worker loop that owns the protocol connection.

    `budget`: the cost of the bodies (and the namespaces built from them) kept at once, by the rule of
    `ppft_protocol.BodyLedger` that the sender follows too (version 2); None keeps every body (version 1).
    A body the rule forgets stays until no queued job needs it: the loop calls `release` with the digests
    its queue still holds whenever `doomed` is true.
    `capture`: where jobs' output goes (`ppft_worker.capture`), with the worker's output region; left out,
    one without a region."""

    def __init__(self, budget: int | None = None, capture: OutputCapture | None = None) -> None:
        self._cache = BodyCache(budget)  # checked against their digests, within the budget
        self._bodies: dict[bytes, FunctionBody] = self._cache.bodies
        self._ready: dict[bytes, tuple[types.ModuleType, Callable[..., Any]]] = {}
        self._broken: dict[bytes, str] = {}
        self._capture = capture = capture if capture is not None else OutputCapture()
        self._stdout = capture.stdout
        self._stderr = capture.stderr
        self._end_wall = float("-inf")
        self._end_cpu = 0.0

    def add_body(self, body: FunctionBody) -> None:
        """Remember a body; its namespace is built by the first job that needs it.

        A digest names one content, so a body sent again keeps the namespace already built (and the state
        its functions keep there); a body that failed to build is retried, as the cause may be fixed now.
        A body whose digest does not match its content is refused (and logged): it never replaces the body
        of that digest, and the jobs that need it fail naming the mismatch.
        """
        if self._cache.add(body) is None:
            self._broken.pop(body.digest, None)

    def has_body(self, digest: bytes) -> bool:
        return digest in self._bodies

    @property
    def doomed(self) -> bool:
        """Whether bodies forgotten by the budget are still held, waiting for `release`."""
        return self._cache.doomed

    def release(self, needed: set[bytes]) -> None:
        """Drop the forgotten bodies (and their namespaces) that no job in `needed` refers to."""
        for digest in self._cache.release(needed):
            self._ready.pop(digest, None)
            self._broken.pop(digest, None)

    @property
    def kept(self) -> int:
        """How many bodies this runner holds (forgotten ones still needed included)."""
        return len(self._bodies)

    def run(self, job: Job) -> Result:
        """Run one job and describe its outcome; never raises for anything the job or its body does."""
        job_id, digest, args_data, protocol = job
        if _pending_sources:
            _cache_sources()
        modules = sys.modules
        saved_main = modules["__main__"]
        saved_out = sys.stdout
        saved_err = sys.stderr
        capture = self._capture
        sys.stdout = self._stdout
        sys.stderr = self._stderr
        capture.job_id = job_id
        try:
            ready = self._ready.get(digest)
            if ready is None:
                prepared = self._prepare(digest)
                if isinstance(prepared, str):
                    return self._setup_failure(job_id, prepared, protocol)
                ready = prepared
            namespace, func = ready
            modules["__main__"] = namespace  # before the arguments: they may carry module data for it
            try:
                args = pickle.loads(args_data)
            except Exception as exc:  # noqa: BLE001 - dill's loader may still read it; else the result says why
                loaded, args = _args_fallback(self._bodies[digest].name, job_id, exc, args_data)
                if not loaded:
                    return self._setup_failure(job_id, args, protocol)
            start = perf_counter()
            cpu_start = self._end_cpu if start - self._end_wall < _CPU_REUSE_WINDOW else process_time()
            try:
                value = func(*args)
            except BaseException as exc:  # noqa: BLE001 - the job's own exception (SystemExit too) is its result
                end = self._end_wall = perf_counter()
                cpu_end = self._end_cpu = process_time()
                if type(exc) is NameError:
                    _explain_name_error(exc, namespace.__dict__)
                return self._job_failure(job_id, exc, end - start, cpu_end - cpu_start, protocol)
            end = self._end_wall = perf_counter()
            cpu_end = self._end_cpu = process_time()
            try:
                data = pickle.dumps(value, protocol)
            except Exception as exc:  # noqa: BLE001 - dill may still manage; else the failure is the result
                return self._value_fallback(
                    job_id, digest, value, exc, end - start, cpu_end - cpu_start, protocol
                )
            if capture.size:  # the job wrote something
                output, spans = capture.take()
                return _new_tuple(
                    Result,
                    (job_id, True, data, output, end - start, cpu_end - cpu_start, "", "", "", b"", spans),
                )
            return _new_tuple(
                Result, (job_id, True, data, "", end - start, cpu_end - cpu_start, "", "", "", b"", ())
            )
        finally:
            modules["__main__"] = saved_main
            sys.stdout = saved_out
            sys.stderr = saved_err

    # -- output -------------------------------------------------------------------------------------------

    def _take_output(self) -> dict[str, Any]:
        """The `output` and `stderr_spans` fields of the current job's result (the rare paths' way)."""
        capture = self._capture
        if not capture.size:
            return {}
        output, spans = capture.take()
        return {"output": output, "stderr_spans": spans}

    # -- building namespaces (once per digest) ------------------------------------------------------------

    def _prepare(self, digest: bytes) -> tuple[types.ModuleType, Callable[..., Any]] | str:
        """Build the namespace and callable of a body, or say why it cannot be built."""
        broken = self._broken.get(digest)
        if broken is not None:
            return broken
        body = self._bodies.get(digest)
        if body is None:
            refused = self._cache.refusal(digest)
            if refused is not None:
                return refused
            return (
                f"function digest {digest.hex()} is unknown to this worker: its FunctionBody must be sent "
                "before the first job that uses it (a bug in the sender, not in the job)"
            )
        namespace = types.ModuleType("__main__", f"namespace of the ppft function {body.name}")
        # ppft 1.7 ran jobs in its worker module's globals, where `os` and `sys` were imported; jobs that
        # use them without listing them in modules= keep working
        namespace.os = os  # type: ignore[attr-defined]
        namespace.sys = sys  # type: ignore[attr-defined]
        saved_main = sys.modules["__main__"]
        sys.modules["__main__"] = namespace  # dill pickles may refer to __main__: let them find this one
        try:
            result = _build_namespace(body, namespace)
        finally:
            sys.modules["__main__"] = saved_main
        if isinstance(result, str):
            _log().warning(
                "function %s (digest %s) cannot run here: %s",
                printable(body.name), digest.hex()[:16], printable(result, 1000),
            )  # fmt: skip
            self._broken[digest] = result
            return result
        ready = (namespace, result)
        self._ready[digest] = ready
        return ready

    # -- results of the rare paths ------------------------------------------------------------------------

    def _setup_failure(self, job_id: int, message: str, protocol: int) -> Result:
        exc = JobSetupError(message)
        return Result(
            job_id,
            False,
            **self._take_output(),
            error_type=_type_name(JobSetupError),
            error_message=message,
            traceback=f"{_type_name(JobSetupError)}: {message}\n",
            exception=_pickle_exception(exc, protocol),
        )

    def _job_failure(self, job_id: int, exc: BaseException, wall: float, cpu: float, protocol: int) -> Result:
        tb = exc.__traceback__
        tb = tb.tb_next if tb is not None else None  # drop run()'s own frame
        import traceback  # noqa: PLC0415 - a job that raises pays for it, not every worker's start-up

        _cache_sources()
        try:
            text = "".join(traceback.format_exception(type(exc), exc, tb))
        except Exception as fmt_exc:  # noqa: BLE001 - a broken __str__ must not lose the result
            text = f"{_type_name(type(exc))}: <traceback unavailable: {fmt_exc!r}>\n"
        data = _pickle_exception(exc, protocol)
        exc.__traceback__ = None  # free the job's frames now
        return Result(
            job_id,
            False,
            **self._take_output(),
            wall_time=wall,
            cpu_time=cpu,
            error_type=_type_name(type(exc)),
            error_message=_safe_str(exc),
            traceback=text,
            exception=data,
        )

    def _value_fallback(
        self,
        job_id: int,
        digest: bytes,
        value: object,
        exc: Exception,
        wall: float,
        cpu: float,
        protocol: int,
    ) -> Result:
        try:
            data = _dumps_main_by_name(value, protocol)
        except Exception:  # noqa: BLE001 - not only a __main__ class by value: dill's turn
            data = b""
        if data:
            return Result(job_id, True, data, wall_time=wall, cpu_time=cpu, **self._take_output())
        try:
            from .portable import portable_dumps  # noqa: PLC0415 - only values the stdlib pickle refuses

            data = portable_dumps(value, protocol, recurse=True)  # code: loadable by another Python too
        except Exception as dill_exc:  # noqa: BLE001 - reported in the result
            name = self._bodies[digest].name
            message = (
                f"the value returned by {name} in job {job_id}, of type {_type_name(type(value))}, could not "
                f"be pickled: pickle: {type(exc).__name__}: {exc}; dill: {type(dill_exc).__name__}: "
                f"{dill_exc}. Return plain data or objects whose classes the caller can import"
            )
            return Result(
                job_id,
                False,
                **self._take_output(),
                wall_time=wall,
                cpu_time=cpu,
                error_type=_type_name(UnpicklableResultError),
                error_message=message,
                traceback=f"{_type_name(UnpicklableResultError)}: {message}\n",
                exception=_pickle_exception(UnpicklableResultError(message), protocol),
            )
        return Result(job_id, True, bytes(data), wall_time=wall, cpu_time=cpu, **self._take_output())


# -- helpers of the rare paths --------------------------------------------------------------------------


def _args_fallback(name: str, job_id: int, exc: Exception, data: bytes | memoryview) -> tuple[bool, Any]:
    """`(True, args)` when dill's loader reads the arguments (a pickle naming `__builtin__`), else
    `(False, message)`."""
    try:
        return True, _dill_loads(data)
    except Exception as dill_exc:  # noqa: BLE001 - the reason is reported in the result
        return False, (
            f"the arguments of job {job_id} (function {name}) cannot be unpickled on this worker: "
            f"{type(exc).__name__}: {exc}; dill: {type(dill_exc).__name__}: {dill_exc}. Every class they "
            "use must be importable here, or travel by value (defined in the caller's __main__) or as a "
            "depfunc"
        )


def _build_namespace(body: FunctionBody, namespace: types.ModuleType) -> Callable[..., Any] | str:
    """Fill `namespace` from `body`; the callable to run, or a message saying what failed and what to do."""
    ns = namespace.__dict__
    for entry in body.imports:
        failure = _run_import(entry, ns)
        if failure is not None:
            return failure
    main: object = None
    if body.pickled:
        try:
            loaded = _loads_body(body.pickled)
            if type(loaded) is tuple:  # (callable or None, {name: pickled depfunc})
                main, extras = loaded
                extras = dict(extras)
            else:
                extras = {}
                main = loaded
        except Exception as exc:  # noqa: BLE001 - reported in every result of this body
            return (
                f"the pickled part of function {body.name} cannot be unpickled on this worker: "
                f"{type(exc).__name__}: {exc}. A module it refers to must be installed here, and dill too "
                "when the caller used it"
            )
        ns.update(extras)
        for value in extras.values():
            _adopt_main_classes(_globals_of(value), ns)
    for index, source in enumerate(body.sources):
        failure = _run_source(body, index, source, ns)
        if failure is not None:
            return failure
    if main is None:
        func = ns.get(body.name)
        if func is None:
            return f"the sources of function {body.name} define no {body.name!r} (a bug in the sender)"
    else:
        func = main
        g = _globals_of(func)
        if g is not None:
            for key, value in ns.items():
                if not key.startswith("__"):
                    g.setdefault(key, value)
            _adopt_main_classes(g, ns)
    if not callable(func):
        return f"{body.name} is a {type(func).__name__}, not a callable"
    return func  # type: ignore[no-any-return]


UNSHIPPED = "__ppft_unshipped__"
"""The namespace entry where a job's pickled arguments name the caller's globals that could not be sent to
this worker, and why (`ppft_client.moduledata`)."""


def _explain_name_error(exc: NameError, ns: dict[str, Any]) -> None:
    """Say why, when a job's `NameError` is for a global of the caller that could not be sent here."""
    unshipped = ns.get(UNSHIPPED)
    name = getattr(exc, "name", None)
    if type(unshipped) is not dict or not isinstance(name, str) or name not in unshipped:
        return
    exc.args = (
        f"name {name!r} is not defined on this worker: the caller's global {name} could not be sent: "
        f"{unshipped[name]}. Create it inside the function, or pass what the job needs as an argument",
    )


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


def _run_source(body: FunctionBody, index: int, source: str, ns: dict[str, Any]) -> str | None:
    defined = _defined_name(source)
    what = f"{body.name}'s source {index + 1} ({defined or 'no def or class'})"
    filename = f"<ppft {body.digest.hex()[:12]} {defined or index}>"
    # tracebacks of the job then show the source lines, as they would in the caller's file
    _pending_sources[filename] = source
    _cache_sources()
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
    """The name of the first `def`, `async def` or `class` at the start of a line of `source`, or ""."""
    for line in source.splitlines():
        words = line.split(None, 2) if line[:1] in ("d", "c", "a") else ()
        if len(words) < 2:
            continue
        keyword, rest = words[0], words[1]
        if keyword == "async" and len(words) == 3 and words[1] == "def":
            rest = words[2]
        elif keyword not in ("def", "class"):
            continue
        name = ""
        for char in rest:
            if not (char.isalnum() or char == "_"):
                break
            name += char
        if name:
            return name
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
    return _dill_loads(data)


def _dill_loads(data: bytes | memoryview) -> object:
    import dill  # noqa: PLC0415 - only dill pickles that need its loader pay for it

    return dill.loads(bytes(data))


def _dumps_main_by_name(value: object, protocol: int) -> bytes:
    from .picklers import dumps_main_by_name  # noqa: PLC0415 - rare path, off a worker's start-up

    return dumps_main_by_name(value, protocol)


def _pickle_exception(exc: BaseException, protocol: int) -> bytes:
    """The exception pickled so that the caller rebuilds it as itself (`ppft_worker.picklers`)."""
    from .picklers import pickle_exception  # noqa: PLC0415 - a job that raises pays for it, not start-up

    return pickle_exception(exc, protocol)


def _type_name(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def _safe_str(exc: BaseException) -> str:
    try:
        return str(exc)
    except Exception as str_exc:  # noqa: BLE001 - a broken __str__ must not lose the result
        return f"<str() of the {type(exc).__name__} failed: {str_exc!r}>"
