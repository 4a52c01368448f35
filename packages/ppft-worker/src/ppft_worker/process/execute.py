"""Running jobs in a worker: `JobRunner` keeps the function bodies it was sent, and turns jobs into results.

On the first job that needs a body, the runner builds its namespace (`namespaces.make_namespace`: a fresh
module named `__main__` per digest, with the body's imports, depfuncs and sources). A job then runs with
`sys.modules["__main__"]` pointing at its namespace, so that classes defined by shipped sources pickle by
reference as `__main__.Foo` and the caller resolves them to its own `__main__.Foo`, as with ppft 1.7; and so
that the module data a job's arguments carry (`ppft_client.shipping.moduledata`) lands in that namespace as
they are unpickled, fresh for each job. A job's `NameError` for a global the caller could not send says why.
A value the plain pickle refuses because it holds a `__main__` class this namespace lacks (one that came by
value, with dill, in the arguments) is pickled with such classes referred to by name all the same, so it
comes back as the caller's class too; dill is the last resort.

The bodies it holds (`BodyCache`): each is checked against its digest first, and one that does not hash to
its digest is refused, every job of that digest failing with a setup error naming the mismatch. On a
version-2 link the bodies kept (and their namespaces) stay within `ppft_protocol.bodies.BODY_BUDGET`, by the
rule the sender counts too: the sender sends a body again once the rule has made this side forget it.

This module must never do I/O of its own (the caller owns pipes and sockets), raise for anything a job does
(a job's exception, `SystemExit` and `KeyboardInterrupt` included, is its result), or let a broken body
affect another one. `run` is the hot path of a worker (`scripts/bench --only tiny,latency`): no syscall
beyond the clock reads it reports, no lock, no allocation it can avoid; the rare paths live in helpers.

Result conventions: a job's exception is described by its type name ("module.QualName"), message and remote
traceback (the runner's own frame removed), and pickled so that the caller rebuilds it as itself, with its
attributes, chain and notes, whatever its `__init__` takes (`picklers`). A failure to set the job up
(unknown digest, a source that does not compile, a module that does not import, arguments that do not
unpickle) is a `JobSetupError`, and a return value that cannot be pickled an `UnpicklableResultError`
(`ppft_worker.errors`): both are described the same way, so the caller re-raises them like any other. The
dask runner (`dask_runner`) describes them in the same words (`namespaces`).
"""

from __future__ import annotations

import sys
from time import perf_counter, process_time

from ppft_protocol import BodyLedger, FunctionBody, Job, Pickled, Result, check_digest, printable
from ppft_protocol.cpython import fast_pickle as pickle  # the C pickler alone: `pickle` loads `re`, `enum`

from .capture import OutputCapture
from .namespaces import (
    PENDING_SOURCES,
    args_fallback,
    cache_sources,
    job_traceback,
    make_namespace,
    safe_str,
    type_name,
    unknown_digest,
    unpicklable_value,
)
from .refs import EXTENSION as _REFS  # noqa: F401 - registers `put()` refs' pickle extension

TYPE_CHECKING = False
if TYPE_CHECKING:
    import logging
    import types
    from collections.abc import Callable
    from typing import Any

__all__ = ["UNSHIPPED", "BodyCache", "JobRunner"]

_CPU_REUSE_WINDOW = 20e-6
"""Seconds: a job starting this soon after the previous one ended reuses that end's CPU clock reading as its
start, which saves one `process_time` syscall per job in a worker whose tiny jobs run back to back
(`scripts/bench --only tiny`). Its cpu_time then also counts the runner's own work since the previous job,
which this window bounds."""

_BUFFERED = b"\xffPB5"  # ppft_protocol.buffers.MAGIC: arguments with out-of-band buffers (version 2)
_MAPPED = b"\xffPBM"  # ppft_worker.mapped.MAGIC: the same, their buffers in a shared segment of the pool


_OOB_MIN = 64 * 1024  # ppft_worker.oob.OOB_MIN (not imported: the stdlib `pickle` loads `re`, `enum`)


_new_tuple = tuple.__new__  # builds a Result without NamedTuple.__new__'s Python-level call


def _log() -> logging.Logger:
    """The "ppft.worker" logger; `logging` is loaded on first use, off a worker's way to its first result."""
    import logging  # noqa: PLC0415

    return logging.getLogger("ppft.worker")


_REFUSALS_KEPT = 256  # refused digests remembered, to name the mismatch in their jobs' errors


class BodyCache:
    """The bodies one worker was sent: `bodies` by digest, the refused ones' reasons, the budget's ledger."""

    __slots__ = ("_doomed", "_ledger", "_refused", "bodies")

    def __init__(self, budget: int | None = None) -> None:
        self.bodies: dict[bytes, FunctionBody] = {}
        self._ledger = BodyLedger(budget)
        self._doomed: set[bytes] = set()  # forgotten by the ledger, dropped once no queued job needs them
        self._refused: dict[bytes, str] = {}  # digest -> why its body was refused

    def add(self, body: FunctionBody) -> str | None:
        """Keep `body` (the budget may doom older ones); or refuse it and say why."""
        digest = body.digest
        problem = check_digest(body)
        if problem is not None:
            _log().warning("%s", problem)  # our sentence; the name in it is escaped
            if digest not in self.bodies:  # the genuine body of that digest, if held, stays
                refused = self._refused
                if len(refused) >= _REFUSALS_KEPT:
                    del refused[next(iter(refused))]
                refused[digest] = problem
            return problem
        self._refused.pop(digest, None)
        self.bodies[digest] = body
        self._doomed.discard(digest)
        forgotten = self._ledger.add(body)
        if forgotten:
            self._doomed.update(forgotten)
        return None

    def refusal(self, digest: bytes) -> str | None:
        """Why the body of `digest` was refused, if it was (and no genuine one came since)."""
        return self._refused.get(digest)

    @property
    def doomed(self) -> bool:
        """Whether bodies forgotten by the budget are still held, waiting for `release`."""
        return bool(self._doomed)

    def release(self, needed: set[bytes]) -> list[bytes]:
        """Drop the forgotten bodies that no job in `needed` refers to; their digests."""
        dropped = [d for d in self._doomed if d not in needed]
        for digest in dropped:
            self._doomed.discard(digest)
            self.bodies.pop(digest, None)
        return dropped


class JobRunner:
    """Runs jobs in this process, for the worker loop that owns the protocol connection.

    `budget`: the cost of the bodies (and the namespaces built from them) kept at once, by the rule of
    `ppft_protocol.BodyLedger` that the sender follows too (version 2); None keeps every body (version 1). A
    body the rule forgets stays until no queued job needs it: the loop calls `release` with the digests its
    queue still holds whenever `doomed` is true. `capture`: where jobs' output goes
    (`ppft_worker.process.capture`), with the worker's output region; left out, one without a region."""

    def __init__(
        self,
        budget: int | None = None,
        capture: OutputCapture | None = None,
        buffers: bool = False,
        segments: bool = False,
    ) -> None:
        self._buffers = buffers  # version 2: large buffers of values travel out of band
        self._segments = (
            segments  # and the largest in shared segments, to a local pool (`ppft_worker.mapped`)
        )
        self._cache = BodyCache(budget)  # checked against their digests, within the budget
        self._bodies: dict[bytes, FunctionBody] = self._cache.bodies
        self._ready: dict[bytes, tuple[types.ModuleType, Callable[..., Any]]] = {}
        self._broken: dict[bytes, str] = {}
        self._capture = capture = capture if capture is not None else OutputCapture()
        self._stdout = capture.stdout
        self._stderr = capture.stderr
        self._end_wall = float("-inf")
        self._end_cpu = 0.0
        self.failures = 0  # failed jobs, counted on the failure paths only (a direct worker's report)

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
        if PENDING_SOURCES:
            cache_sources()
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
                args = pickle.loads(args_data)  # type: ignore[arg-type]
            except Exception as exc:  # noqa: BLE001 - dill's loader may still read it; else the result says why
                if exc.__class__.__name__ == "RefUnavailableError":  # a `put()` ref this worker lacks
                    return self._job_failure(job_id, exc, 0.0, 0.0, protocol)
                if args_data[:4] in (_BUFFERED, _MAPPED):  # type: ignore[index, operator]  # out-of-band buffers (version 2): the value may have them too
                    return self._run_buffered(job_id, digest, func, args_data, protocol)
                loaded, args = args_fallback(self._bodies[digest].name, job_id, exc, args_data)  # type: ignore[arg-type]
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
            if len(data) >= _OOB_MIN and self._buffers:  # large: its buffers may travel out of band
                return self._large_value(job_id, value, data, end - start, cpu_end - cpu_start, protocol)
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

    def _run_buffered(
        self, job_id: int, digest: bytes, func: Callable[..., Any], args_data: Any, protocol: int
    ) -> Result:
        """`run` for a job whose arguments came with out-of-band buffers (`ppft_worker.oob`): they load as
        views of the frame, and the value's own large buffers go back out of band too (the sender reads
        them: it sent some), as views of the value's memory, uncopied: the worker loop sends such a result
        before it runs another job (which could change the value). A runner made with `buffers=True`
        (version 2) sends any large value's buffers so (`_large_value`), whatever its arguments were."""
        from .. import oob  # noqa: PLC0415 - only big-data jobs pay for it

        try:
            args: Any = oob.loads(args_data)
        except Exception as exc:  # noqa: BLE001 - the result says why
            name = self._bodies[digest].name
            return self._setup_failure(
                job_id,
                f"the arguments of job {job_id} (function {name}) cannot be unpickled on this worker: "
                f"{type(exc).__name__}: {exc}. Every class they use must be importable here",
                protocol,
            )
        start = perf_counter()
        cpu_start = process_time()
        try:
            value = func(*args)
        except BaseException as exc:  # noqa: BLE001 - the job's own exception is its result, as in `run`
            end = self._end_wall = perf_counter()
            cpu_end = self._end_cpu = process_time()
            return self._job_failure(job_id, exc, end - start, cpu_end - cpu_start, protocol)
        end = self._end_wall = perf_counter()
        cpu_end = self._end_cpu = process_time()
        del args
        try:
            data = oob.dumps(value, protocol, snapshot=False)
        except Exception as exc:  # noqa: BLE001 - dill may still manage; else the failure is the result
            return self._value_fallback(
                job_id, digest, value, exc, end - start, cpu_end - cpu_start, protocol
            )
        if self._segments and data.__class__ is Pickled:
            data = self._in_segment(job_id, data)
        return Result(
            job_id, True, data, wall_time=end - start, cpu_time=cpu_end - cpu_start, **self._take_output()
        )

    def _large_value(
        self, job_id: int, value: object, data: bytes, wall: float, cpu: float, protocol: int
    ) -> Result:
        """The result of a value whose pickle is large (version 2): with its large buffers out of band, as
        views of its memory (the worker loop sends it before another job runs), when it has such buffers
        (pickled again: a numpy array costs one copy more on the worker, and two less on the way); else the
        plain pickle already made. The tiny path pays one length check for it."""
        from .. import oob  # noqa: PLC0415 - only large values pay for it

        buffered: bytes | Pickled = data
        if protocol == 5 and oob.has_large_bytearray(data):  # else pickling again would set nothing apart
            try:
                buffered = oob.dumps(value, protocol, snapshot=False)
            except Exception:  # noqa: BLE001 - it pickled once: keep that pickle
                buffered = data
            if self._segments and buffered.__class__ is Pickled:
                buffered = self._in_segment(job_id, buffered)
        return Result(job_id, True, buffered, wall_time=wall, cpu_time=cpu, **self._take_output())

    def _in_segment(self, job_id: int, value: Pickled) -> bytes | Pickled:
        """A value's large buffers in a shared segment its local pool maps (`ppft_worker.mapped`), held
        until the pool releases it; `value` itself when they are small or no segment can be had."""
        from .. import mapped  # noqa: PLC0415 - only big data pays for it

        try:
            field = mapped.result_field(job_id, value)
        except OSError as exc:
            _log().warning("job %d: its value goes through the pipe, not a shared segment: %s", job_id, exc)
            return value
        return value if field is None else field

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
            return self._cache.refusal(digest) or unknown_digest(digest)
        result = make_namespace(body.digest, body.name, body.sources, body.imports, body.pickled)
        if isinstance(result, str):
            _log().warning(
                "function %s (digest %s) cannot run here: %s",
                printable(body.name), digest.hex()[:16], printable(result, 1000),
            )  # fmt: skip
            self._broken[digest] = result
            return result
        self._ready[digest] = result
        return result

    # -- results of the rare paths ------------------------------------------------------------------------

    def _setup_failure(self, job_id: int, message: str, protocol: int) -> Result:
        from ..errors import JobSetupError  # noqa: PLC0415 - a job that cannot be set up pays for it

        exc = JobSetupError(message)
        self.failures += 1
        return Result(
            job_id,
            False,
            **self._take_output(),
            error_type=type_name(JobSetupError),
            error_message=message,
            traceback=f"{type_name(JobSetupError)}: {message}\n",
            exception=_pickle_exception(exc, protocol),
        )

    def _job_failure(self, job_id: int, exc: BaseException, wall: float, cpu: float, protocol: int) -> Result:
        text = job_traceback(exc)
        data = _pickle_exception(exc, protocol)
        exc.__traceback__ = None  # free the job's frames now
        self.failures += 1
        return Result(
            job_id,
            False,
            **self._take_output(),
            wall_time=wall,
            cpu_time=cpu,
            error_type=type_name(type(exc)),
            error_message=safe_str(exc),
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
            from ..portable import portable_dumps  # noqa: PLC0415 - only values the stdlib pickle refuses

            data = portable_dumps(value, protocol, recurse=True)  # code: loadable by another Python too
        except Exception as dill_exc:  # noqa: BLE001 - reported in the result
            from ..errors import UnpicklableResultError  # noqa: PLC0415 - the rare path pays for it

            message = unpicklable_value(self._bodies[digest].name, job_id, value, exc, dill_exc)
            self.failures += 1
            return Result(
                job_id,
                False,
                **self._take_output(),
                wall_time=wall,
                cpu_time=cpu,
                error_type=type_name(UnpicklableResultError),
                error_message=message,
                traceback=f"{type_name(UnpicklableResultError)}: {message}\n",
                exception=_pickle_exception(UnpicklableResultError(message), protocol),
            )
        return Result(job_id, True, bytes(data), wall_time=wall, cpu_time=cpu, **self._take_output())


# -- helpers of the rare paths --------------------------------------------------------------------------


UNSHIPPED = "__ppft_unshipped__"
"""The namespace entry where a job's pickled arguments name the caller's globals that could not be sent to
this worker, and why (`ppft_client.shipping.moduledata`)."""


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


def _dumps_main_by_name(value: object, protocol: int) -> bytes:
    from .picklers import dumps_main_by_name  # noqa: PLC0415 - rare path, off a worker's start-up

    return dumps_main_by_name(value, protocol)


def _pickle_exception(exc: BaseException, protocol: int) -> bytes:
    """The exception pickled so that the caller rebuilds it as itself (`ppft_worker.process.picklers`)."""
    from .picklers import pickle_exception  # noqa: PLC0415 - a job that raises pays for it, not start-up

    return pickle_exception(exc, protocol)
