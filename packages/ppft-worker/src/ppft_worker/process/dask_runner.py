"""The job runner that travels to dask workers, where nothing of ppft is installed.

`dask_node` sends this file's *source text* to the cluster (compressed, with every batch); a small bootstrap
function executes it once per worker process into a module of its own, registered in `sys.modules` under a
name that carries the digest of this text, so every later batch in that process finds it at once. So this
file must never import anything of ppft (ppft_protocol, ppft_worker, ppft_client): only the standard library,
and `dill` lazily, on the paths where a job's function or values need it. It must stay valid Python 3.10.

It runs jobs with the same logic as `ppft_worker.process.execute.JobRunner` and returns the same `Result`
fields, as plain tuples (`RESULT_FIELDS`), so that the caller gets identical job semantics from every kind of
node: imports of `modules=`, source shipping with the pickle fallback, a fresh `__main__`-named namespace per
function digest, captured output, exceptions described by type name, message, traceback and pickle.
`tests/test_dask_runner.py` runs both on the same jobs and compares them field by field: keep them in step.

One difference, because a dask worker runs tasks in threads: this runner never swaps `sys.stdout` or
`sys.modules["__main__"]` for the duration of a job. Output is captured per thread by a transparent proxy
installed once as `sys.stdout`/`sys.stderr` (writes from threads that run no ppft job go to the original
stream), which also notes the parts written to stderr (the result's `stderr_spans`, UTF-8 byte offsets);
and a value or exception of a class that a shipped source defined is pickled with a reference to
`__main__.<name>` (what JobRunner's swapped `__main__` gives), so it arrives as the caller's own class. Only
building a namespace (once per digest per process, under a lock) swaps `__main__`, as JobRunner does.

The two ppft error types a job can fail with here (`JobSetupError`, `UnpicklableResultError`) are named by
their ppft type names and travel without a pickle; the client fills the pickle in.
"""

from __future__ import annotations

import functools
import io
import linecache
import logging
import os
import pickle
import re
import sys
import threading
import traceback
import types
from time import perf_counter, thread_time

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

__all__ = ["RESULT_FIELDS", "SETUP_ERROR", "UNPICKLABLE_RESULT", "run_batch"]

RESULT_FIELDS = (
    "job_id",
    "ok",
    "value",
    "output",
    "wall_time",
    "cpu_time",
    "error_type",
    "error_message",
    "traceback",
    "exception",
    "stderr_spans",
)
"""A result tuple's fields, in the order of `ppft_protocol.Result`."""

SETUP_ERROR = "ppft_worker.errors.JobSetupError"
UNPICKLABLE_RESULT = "ppft_worker.errors.UnpicklableResultError"

log = logging.getLogger("ppft.dask.worker")

_DEFNAME = re.compile(r"^(?:async\s+def|def|class)\s+(\w+)", re.MULTILINE)

# Per-process state: this module is executed once per worker process and then kept in sys.modules.
_lock = threading.RLock()  # building namespaces, installing the output proxy
_bodies: dict[bytes, tuple[bytes, str, tuple[str, ...], tuple[str, ...], bytes]] = {}
_ready: dict[bytes, tuple[types.ModuleType, Callable[..., Any]]] = {}
_broken: dict[bytes, str] = {}
_data_locks: dict[bytes, threading.Lock] = {}  # per digest: its jobs that carry module data, one at a time
_local = threading.local()  # .out: the StringIO of the job this thread runs, or None
# Bodies and namespaces kept within a budget, as `ppft_protocol.bodies` keeps a worker's (every batch carries
# the bodies its jobs use, so a forgotten one comes back with the next batch that needs it): digest -> cost,
# least recently used first; a body a running batch uses is never forgotten.
_BUDGET = 64 * 1024 * 1024
_OVERHEAD = 4096
_costs: dict[bytes, int] = {}
_in_use: dict[bytes, int] = {}
_total = [0]


def run_batch(
    bodies: tuple[tuple[bytes, str, tuple[str, ...], tuple[str, ...], bytes], ...],
    jobs: tuple[tuple[int, bytes, bytes, int], ...],
) -> list[tuple[Any, ...]]:
    """Run `jobs` ((job_id, digest, pickled args, pickle protocol), ...) in order; one result tuple each.

    `bodies` are the function bodies the jobs use, as (digest, name, sources, imports, pickled). A body
    that failed to build before is tried again, as JobRunner does when a body is sent again: the cause
    (a module missing on this worker) may have been fixed meanwhile."""
    _install_capture()
    with _lock:
        for body in bodies:
            digest = body[0]
            if digest not in _ready:
                _bodies[digest] = body
                _broken.pop(digest, None)
            cost = _costs.pop(digest, None)
            if cost is None:
                _, name, sources, imports, pickled = body
                cost = _OVERHEAD + len(name) + sum(map(len, sources)) + sum(map(len, imports)) + len(pickled)
                _total[0] += cost
            _costs[digest] = cost  # the most recently used now
            _in_use[digest] = _in_use.get(digest, 0) + 1
        if _total[0] > _BUDGET:
            _forget()
    _local.out = io.StringIO()
    _local.size = 0  # bytes of UTF-8 the current job wrote
    _local.spans = []  # [start, end] of its stderr parts
    try:
        return [_run(job) for job in jobs]
    finally:
        _local.out = None
        with _lock:
            for body in bodies:
                left = _in_use.pop(body[0], 1) - 1
                if left:
                    _in_use[body[0]] = left


def _forget() -> None:
    """Drop the least recently used bodies and namespaces no running batch uses, down to the budget."""
    for digest in list(_costs):
        if _total[0] <= _BUDGET:
            break
        if digest in _in_use:
            continue
        _total[0] -= _costs.pop(digest)
        _bodies.pop(digest, None)
        _ready.pop(digest, None)
        _broken.pop(digest, None)


def _run(job: tuple[int, bytes, bytes, int]) -> tuple[Any, ...]:
    """One job, never raising for anything it does (its SystemExit and KeyboardInterrupt included)."""
    job_id, digest, args_data, _protocol = job
    ready = _ready.get(digest)
    if ready is None:
        prepared = _prepare(digest)
        if isinstance(prepared, str):
            return _setup_failure(job_id, prepared)
        ready = prepared
    if b"import_module" not in args_data:
        return _run_ready(job, ready)
    # The arguments carry module data to put into the namespace (ppft_client.shipping.moduledata) while
    # `__main__` is the namespace: as when a body is built. Jobs of one function run one at a time here, so
    # that a thread never runs with another submit's values.
    with _lock:
        data_lock = _data_locks.setdefault(digest, threading.Lock())
    with data_lock:
        return _run_ready(job, ready, ready[0])


def _run_ready(
    job: tuple[int, bytes, bytes, int],
    ready: tuple[types.ModuleType, Callable[..., Any]],
    namespace: types.ModuleType | None = None,
) -> tuple[Any, ...]:
    job_id, digest, args_data, protocol = job
    func = ready[1]
    try:
        if namespace is None:
            args = pickle.loads(args_data)
        else:
            with _lock:
                saved_main = sys.modules["__main__"]
                sys.modules["__main__"] = namespace
                try:
                    args = pickle.loads(args_data)
                finally:
                    sys.modules["__main__"] = saved_main
    except Exception as exc:  # noqa: BLE001 - dill's loader may still read it; else the result says why
        loaded, args = _args_fallback(_bodies[digest][1], job_id, exc, args_data)
        if not loaded:
            return _setup_failure(job_id, args)
    start = perf_counter()
    cpu_start = thread_time()
    try:
        value = func(*args)
    except BaseException as exc:  # noqa: BLE001 - the job's own exception (SystemExit too) is its result
        end = perf_counter()
        return _job_failure(job_id, exc, end - start, thread_time() - cpu_start, protocol)
    end = perf_counter()
    cpu = thread_time() - cpu_start
    try:
        data = pickle.dumps(value, protocol)
    except Exception as exc:  # noqa: BLE001 - by name, then dill; else the failure is the result
        return _value_fallback(job_id, digest, value, exc, end - start, cpu, protocol)
    return (job_id, True, data, _take_output(), end - start, cpu, "", "", "", b"", _taken_spans())


# -- output capture -------------------------------------------------------------------------------------


class _Capture:
    """`sys.stdout`/`sys.stderr` of a worker: the running job's buffer on its thread, else the original."""

    _ppft_capture = True

    def __init__(self, original: Any, stream: int = 0) -> None:
        self._original = original
        self._stream = stream  # 0 stdout, 1 stderr

    def _target(self) -> Any:
        out = getattr(_local, "out", None)
        if out is not None:
            return out
        return self._original if self._original is not None else io.StringIO()

    def write(self, text: str) -> Any:
        out = getattr(_local, "out", None)
        if out is None:
            return self._target().write(text)
        written = out.write(text)
        if text:
            start = _local.size
            end = _local.size = start + len(text.encode("utf-8", "surrogatepass"))
            if self._stream:
                spans = _local.spans
                if spans and spans[-1][1] == start:
                    spans[-1][1] = end
                else:
                    spans.append([start, end])
        return written

    def flush(self) -> None:
        self._target().flush()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._target(), name)


def _install_capture() -> None:
    if getattr(sys.stdout, "_ppft_capture", False) and getattr(sys.stderr, "_ppft_capture", False):
        return
    with _lock:
        for stream, name in enumerate(("stdout", "stderr")):
            current = getattr(sys, name)
            if not getattr(current, "_ppft_capture", False):
                setattr(sys, name, _Capture(current, stream))


def _take_output() -> str:
    """The current job's text; its stderr spans wait for `_taken_spans`, which comes right after it."""
    out = _local.out
    spans = _local.spans
    _local.taken = tuple((start, end) for start, end in spans) if spans else ()
    _local.size = 0
    _local.spans = []
    try:
        if not out.tell():
            return ""
        text: str = out.getvalue()
        out.seek(0)
        out.truncate()
    except ValueError:  # the job closed sys.stdout: start afresh
        _local.out = io.StringIO()
        _local.taken = ()
        return ""
    return text


def _taken_spans() -> tuple[tuple[int, int], ...]:
    """The stderr spans of the text `_take_output` just gave (a result tuple's last field)."""
    spans: tuple[tuple[int, int], ...] = _local.taken
    return spans


# -- building namespaces (once per digest and process) ----------------------------------------------------


def _prepare(digest: bytes) -> tuple[types.ModuleType, Callable[..., Any]] | str:
    """Build the namespace and callable of a body, or say why it cannot be built."""
    with _lock:
        ready = _ready.get(digest)
        if ready is not None:
            return ready
        broken = _broken.get(digest)
        if broken is not None:
            return broken
        body = _bodies.get(digest)
        if body is None:
            return (
                f"function digest {digest.hex()} is unknown to this worker: its FunctionBody must be sent "
                "before the first job that uses it (a bug in the sender, not in the job)"
            )
        name = body[1]
        namespace = types.ModuleType("__main__", f"namespace of the ppft function {name}")
        # as in JobRunner: ppft 1.7's jobs saw `os` and `sys` without listing them in modules=
        namespace.os = os  # type: ignore[attr-defined]
        namespace.sys = sys  # type: ignore[attr-defined]
        saved_main = sys.modules["__main__"]
        sys.modules["__main__"] = namespace  # dill pickles may refer to __main__: let them find this one
        try:
            result = _build_namespace(body, namespace)
        finally:
            sys.modules["__main__"] = saved_main
        if isinstance(result, str):
            # repr escapes what the client's text may hold (this runs where ppft_protocol may be missing)
            log.warning(
                "ppft function %.200r (digest %s) cannot run here: %.1000r", name, digest.hex()[:16], result
            )
            _broken[digest] = result
            return result
        ready = (namespace, result)
        _ready[digest] = ready
        return ready


def _build_namespace(
    body: tuple[bytes, str, tuple[str, ...], tuple[str, ...], bytes], namespace: types.ModuleType
) -> Callable[..., Any] | str:
    """Fill `namespace` from `body`; the callable to run, or a message saying what failed and what to do."""
    digest, name, sources, imports, pickled = body
    ns = namespace.__dict__
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
    match = _DEFNAME.search(source)
    what = f"{name}'s source {index + 1} ({match.group(1) if match else 'no def or class'})"
    filename = f"<ppft {digest.hex()[:12]} {match.group(1) if match else index}>"
    # tracebacks of the job then show the source lines, as they would in the caller's file
    linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)
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


# -- results of the rare paths ----------------------------------------------------------------------------


def _setup_failure(job_id: int, message: str) -> tuple[Any, ...]:
    return (
        job_id,
        False,
        b"",
        _take_output(),
        0.0,
        0.0,
        SETUP_ERROR,
        message,
        f"{SETUP_ERROR}: {message}\n",
        b"",
        _taken_spans(),
    )


def _job_failure(job_id: int, exc: BaseException, wall: float, cpu: float, protocol: int) -> tuple[Any, ...]:
    tb = exc.__traceback__
    tb = tb.tb_next if tb is not None else None  # drop _run's own frame
    try:
        text = "".join(traceback.format_exception(type(exc), exc, tb))
    except Exception as fmt_exc:  # noqa: BLE001 - a broken __str__ must not lose the result
        text = f"{_type_name(type(exc))}: <traceback unavailable: {fmt_exc!r}>\n"
    data = pickle_exception(exc, protocol)
    exc.__traceback__ = None  # free the job's frames now
    output = _take_output()
    return (
        job_id,
        False,
        b"",
        output,
        wall,
        cpu,
        _type_name(type(exc)),
        _safe_str(exc),
        text,
        data,
        _taken_spans(),
    )


def _value_fallback(
    job_id: int, digest: bytes, value: object, exc: Exception, wall: float, cpu: float, protocol: int
) -> tuple[Any, ...]:
    try:
        data = dumps_main_by_name(value, protocol)
    except Exception:  # noqa: BLE001 - not only a __main__ class by value: dill's turn
        data = b""
    if data:
        return (job_id, True, data, _take_output(), wall, cpu, "", "", "", b"", _taken_spans())
    try:
        import dill  # noqa: PLC0415 - only values the stdlib pickle refuses pay for it

        data = dill.dumps(value, protocol=protocol, recurse=True)
    except Exception as dill_exc:  # noqa: BLE001 - reported in the result
        message = (
            f"the value returned by {_bodies[digest][1]} in job {job_id}, of type {_type_name(type(value))}, "
            f"could not be pickled: pickle: {type(exc).__name__}: {exc}; dill: {type(dill_exc).__name__}: "
            f"{dill_exc}. Return plain data or objects whose classes the caller can import"
        )
        trace = f"{UNPICKLABLE_RESULT}: {message}\n"
        output = _take_output()
        return (
            job_id,
            False,
            b"",
            output,
            wall,
            cpu,
            UNPICKLABLE_RESULT,
            message,
            trace,
            b"",
            _taken_spans(),
        )
    return (job_id, True, bytes(data), _take_output(), wall, cpu, "", "", "", b"", _taken_spans())


def _args_fallback(name: str, job_id: int, exc: Exception, data: bytes | memoryview) -> tuple[bool, Any]:
    """`(True, args)` when dill's loader reads the arguments, else `(False, message)`."""
    try:
        return True, _dill_loads(data)
    except Exception as dill_exc:  # noqa: BLE001 - the reason is reported in the result
        return False, (
            f"the arguments of job {job_id} (function {name}) cannot be unpickled on this worker: "
            f"{type(exc).__name__}: {exc}; dill: {type(dill_exc).__name__}: {dill_exc}. Every class they "
            "use must be importable here, or travel by value (defined in the caller's __main__) or as a "
            "depfunc"
        )


def _type_name(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def _safe_str(exc: BaseException) -> str:
    try:
        return str(exc)
    except Exception as str_exc:  # noqa: BLE001 - a broken __str__ must not lose the result
        return f"<str() of the {type(exc).__name__} failed: {str_exc!r}>"


# -- shared: ppft_worker/picklers.py and ppft_client/dask_runner.py hold this part the same, to the end --


class _MainByName(pickle.Pickler):
    """A pickler that refers to every class of `__main__` by its name, as `import __main__; __main__.X`.

    An instance of a class the caller's `__main__` defines (shipped as source, or by value with dill) comes
    back as an instance of the caller's own class this way, although the worker's `__main__` may hold no
    object of that name."""

    def reducer_override(self, obj: Any) -> Any:
        if obj is _MAIN:
            import importlib  # noqa: PLC0415 - rare path

            return importlib.import_module, ("__main__",)
        if isinstance(obj, type) and obj.__module__ == "__main__" and "<" not in obj.__qualname__:
            import operator  # noqa: PLC0415 - rare path

            return operator.attrgetter(obj.__qualname__), (_MAIN,)
        return NotImplemented


_MAIN = object()  # stands for the unpickling side's __main__ module


def dumps_main_by_name(value: object, protocol: int) -> bytes:
    """`value` pickled with the classes of `__main__` referred to by name (raises as `pickle.dumps` does)."""
    buffer = io.BytesIO()
    _MainByName(buffer, protocol).dump(value)
    return buffer.getvalue()


def pickle_exception(exc: BaseException, protocol: int) -> bytes:
    """`exc` pickled for the caller to rebuild as itself (see the module's docstring); dill's pickle if ours
    fails (a class defined inside a function); b"" if that fails too: the caller then has the type name,
    message and traceback, which travel beside it."""
    try:
        buffer = io.BytesIO()
        _ExceptionPickler(buffer, protocol).dump(exc)
        return buffer.getvalue()
    except Exception:  # noqa: BLE001 - dill's turn
        pass
    try:
        import dill  # noqa: PLC0415 - only exceptions our pickler cannot do pay for it

        return bytes(dill.dumps(exc, protocol=protocol, recurse=True))
    except Exception:  # noqa: BLE001 - the type, message and traceback still travel
        return b""


class _ExceptionPickler(_MainByName):
    """`_MainByName`, with every exception it meets reduced by `_reduce_exception`."""

    def __init__(self, file: Any, protocol: int) -> None:
        super().__init__(file, protocol)
        self.protocol = protocol

    def reducer_override(self, obj: Any) -> Any:
        if isinstance(obj, BaseException):
            try:
                return _reduce_exception(obj, self.protocol, self._picklable)
            except Exception:  # noqa: BLE001 - an exception too odd for us: pickle's own way
                return NotImplemented
        return super().reducer_override(obj)

    def _picklable(self, value: Any) -> Any:
        """`value` if it pickles, else its repr (an exception's arg or attribute that cannot travel)."""
        if value is None or isinstance(value, (BaseException, str, int, float, bytes, type)):
            return value  # exceptions are reduced here too; the others always pickle (a type: by name)
        try:
            _ExceptionPickler(io.BytesIO(), self.protocol).dump(value)
        except Exception:  # noqa: BLE001 - anything a value's pickling raises
            try:
                return repr(value)
            except Exception:  # noqa: BLE001 - a broken __repr__
                return f"<{type(value).__qualname__} object>"
        return value


_CHAIN = ("__cause__", "__context__", "__suppress_context__")
_NOT_FIELDS = frozenset(("args", "__traceback__", "__dict__", "__weakref__", "__notes__", *_CHAIN))
_FIELD_TYPES = (types.MemberDescriptorType, types.GetSetDescriptorType)


def _reduce_exception(exc: BaseException, protocol: int, picklable: Callable[[Any], Any]) -> tuple[Any, ...]:
    """The reduce tuple that rebuilds `exc` in the caller (see the module's docstring)."""
    cls = type(exc)
    builtin = _first_builtin(cls)
    state = _fields(exc, cls)
    attributes = getattr(exc, "__dict__", None)
    if attributes:
        state.update(attributes)
    if exc.__cause__ is not None:
        state["__cause__"] = exc.__cause__
    if exc.__context__ is not None:
        state["__context__"] = exc.__context__
    if exc.__suppress_context__:
        state["__suppress_context__"] = True
    state = {key: picklable(value) for key, value in state.items()}
    own_setstate = _owner(cls, "__setstate__").__module__ != "builtins"
    reducer = _owner(cls, "__reduce_ex__", "__reduce__")
    if reducer.__module__ != "builtins":  # a __reduce__ of its own: kept when it rebuilds the exception
        reduced = _working_reduce(exc, cls, protocol)
        if reduced is not None:
            if own_setstate or not (len(reduced) < 3 or reduced[2] is None or isinstance(reduced[2], dict)):
                return reduced  # its own state protocol: left as it is
            merged = dict(state)
            merged.update(reduced[2] or {})
            return (reduced[0], tuple(picklable(arg) for arg in reduced[1]), merged, *reduced[3:])
    args = tuple(picklable(arg) for arg in exc.args)
    if own_setstate:
        state = {key: value for key, value in state.items() if key in (attributes or ())}
    if _owner(cls, "__init__").__module__ == "builtins" and _owner(cls, "__new__").__module__ == "builtins":
        return cls, args, state  # pickle's own way: the built-in __init__ takes the args
    # an __init__ (or __new__) of its own, which may take other arguments: not called; `args` set again, as
    # some built-in __new__ (OSError's) leave them to the __init__
    if not own_setstate:
        state["args"] = args
    return builtin.__new__, (cls, *args), state


def _first_builtin(cls: type) -> type:
    for base in cls.__mro__:
        if base.__module__ == "builtins":
            return base
    return BaseException


def _owner(cls: type, *names: str) -> type:
    """The first class of `cls`'s MRO that defines one of `names`."""
    for base in cls.__mro__:
        attributes = vars(base)
        if any(name in attributes for name in names):
            return base
    return object


def _fields(exc: BaseException, cls: type) -> dict[str, Any]:
    """The fields of `exc` outside its `__dict__` that it has and that can be set back: those of its built-in
    bases (`OSError.filename`) and the `__slots__` of its classes."""
    fields: dict[str, Any] = {}
    for base in cls.__mro__:
        if base is BaseException or base is object:
            continue
        for name, descriptor in vars(base).items():
            if name in _NOT_FIELDS or name in fields or not isinstance(descriptor, _FIELD_TYPES):
                continue
            try:
                value = getattr(exc, name)
                if value is None:  # unset, as far as one can tell (OSError prints a filename2 set to None)
                    continue
                setattr(exc, name, value)  # settable here, so settable in the caller (not a read-only one)
            except Exception:  # noqa: BLE001 - unset, or read-only: rebuilt from args if at all
                continue
            fields[name] = value
    return fields


def _working_reduce(exc: BaseException, cls: type, protocol: int) -> tuple[Any, ...] | None:
    """`exc.__reduce_ex__(protocol)` if calling it gives back an instance of `cls`, else None."""
    try:
        reduced = exc.__reduce_ex__(protocol)
        if not isinstance(reduced, tuple) or len(reduced) < 2:
            return None
        if not isinstance(reduced[0](*reduced[1]), cls):
            return None
    except BaseException:  # noqa: BLE001 - whatever its __init__ does: then it is not called at all
        return None
    return reduced
