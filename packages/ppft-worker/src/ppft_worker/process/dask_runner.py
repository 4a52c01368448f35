"""The job runner for dask workers, where nothing of ppft is installed: `run_batch`.

`ppft_client.nodes.dask` sends this module's text to the cluster with every batch, with the two it imports,
`namespaces` and `picklers` (`travel`); a small bootstrap executes them once per worker process into a
package of their own, registered in `sys.modules` under a name that carries the digest of their text, so
every later batch in that process finds them at once. So these three modules must never import anything of
ppft (the relative imports below find their travelling siblings), only the standard library, and `dill`
lazily, on the paths where a job's function or values need it. They must stay valid Python 3.10.

It runs jobs with the code of `execute.JobRunner` where it can (the namespace of a body, the descriptions of
a failure, the pickling of values and exceptions) and returns the same `Result` fields, as plain tuples
(`RESULT_FIELDS`), so that the caller gets identical job semantics from every kind of node: imports of
`modules=`, source shipping with the pickle fallback, a fresh `__main__`-named namespace per function digest,
captured output, exceptions described by type name, message, traceback and pickle. ppft-client's
`test_dask_node.py` runs both on the same jobs and compares them field by field.

Where it differs, because a dask worker runs tasks in threads: this runner never swaps `sys.stdout` or
`sys.modules["__main__"]` for the duration of a job. Output is captured per thread by a transparent proxy
installed once as `sys.stdout`/`sys.stderr` (writes from threads that run no ppft job go to the original
stream), which also notes the parts written to stderr (the result's `stderr_spans`, UTF-8 byte offsets);
and a value or exception of a class that a shipped source defined is pickled with a reference to
`__main__.<name>` (what JobRunner's swapped `__main__` gives), so it arrives as the caller's own class. Only
building a namespace (once per digest per process, under a lock) swaps `__main__`, as JobRunner does; the
bodies it keeps are bounded by a budget of its own (every batch carries the bodies its jobs use).

The two ppft error types a job can fail with here (`JobSetupError`, `UnpicklableResultError`) are named by
their ppft type names and travel without a pickle; the client fills the pickle in.
"""

from __future__ import annotations

import io
import linecache  # noqa: F401 - loaded here, so the namespaces' sources reach tracebacks at once
import logging
import pickle
import sys
import threading
import types
from time import perf_counter, thread_time

from .namespaces import (
    args_fallback,
    job_traceback,
    make_namespace,
    safe_str,
    type_name,
    unknown_digest,
    unpicklable_value,
)
from .picklers import dumps_main_by_name, pickle_exception

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
        loaded, args = args_fallback(_bodies[digest][1], job_id, exc, args_data)
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
            return unknown_digest(digest)
        name = body[1]
        result = make_namespace(*body)
        if isinstance(result, str):
            # repr escapes what the client's text may hold (this runs where ppft_protocol may be missing)
            log.warning(
                "ppft function %.200r (digest %s) cannot run here: %.1000r", name, digest.hex()[:16], result
            )
            _broken[digest] = result
            return result
        _ready[digest] = result
        return result


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
    text = job_traceback(exc)
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
        type_name(type(exc)),
        safe_str(exc),
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
        message = unpicklable_value(_bodies[digest][1], job_id, value, exc, dill_exc)
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
