"""`Job`: what `Server.submit` returns, a `concurrent.futures.Future` that also speaks ppft 1.7's `_Task`.

Modern code uses it as a future (`result(timeout)`, `exception()`, `done()`, `cancel()`,
`add_done_callback`, `as_completed`, `asyncio.wrap_future`); classic code calls it (`job()`,
`job(raw_result=True)`) and reads `finished`, `tid`, `group`. It is also ppft 1.7's `_Task` (`ppft._Task`),
which pathos subclasses: the constructor takes `_Task`'s arguments (the wire parts are keywords), `lock` is a
`threading.Lock` held until the job finishes (made on first use: a job nobody asks for costs no lock),
`sresult` is the pickle of `(value, captured_output)`, and a subclass that overrides `finalize(sresult)` has
it called, off the I/O thread, before the job counts as finished, as ppft 1.7 did.

The I/O thread completes a job by storing the worker's raw `Result`; the value is unpickled only when someone
asks for it, on their thread, so the I/O thread never spends time on user data. A job that raised is
completed with the rebuilt exception (same type as on the worker, remote traceback as `__cause__`), so
`concurrent.futures.wait(..., FIRST_EXCEPTION)` sees it as an exception. The job's captured output is
printed once, when its value or exception is first retrieved, as ppft does.
"""

from __future__ import annotations

import builtins
import pickle
import sys
import threading
from concurrent.futures import Future
from concurrent.futures._base import (  # the states Future keeps; stable since Python 3.2
    CANCELLED,
    CANCELLED_AND_NOTIFIED,
    FINISHED,
    PENDING,
    RUNNING,
)
from typing import TYPE_CHECKING, Any, ClassVar

from ppft_protocol import FunctionBody, Result
from ppft_protocol import Job as WireJob

from .errors import RemoteJobError, RemoteTraceback, ResultDecodeError

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = ["Job", "rebuild_exception"]

_NO_VALUE = object()


class Job(Future):  # type: ignore[type-arg]
    """One submitted job."""

    _finalizes: ClassVar[bool] = False
    """True for a subclass that overrides `finalize`: the scheduler then completes it through the hook."""

    def __init__(
        self,
        server: Any,
        tid: int,
        callback: Callable[..., Any] | None = None,
        callbackargs: tuple[Any, ...] = (),
        group: str = "default",
        *,
        body: FunctionBody | None = None,
        args: bytes = b"",
        proto: int = pickle.HIGHEST_PROTOCOL,
    ) -> None:
        """ppft 1.7's `_Task(server, tid, callback, callbackargs, group)`; `Server.submit` adds the job's
        function `body`, its pickled `args` and pickle `proto`. A job made without a body (a classic
        `_Task` subclass) gets one from `Server.insert(sfunc, sargs, task)`."""
        super().__init__()
        self.server = server
        self.tid = tid
        self.callback = callback
        self.callbackargs = callbackargs
        self.group = group
        self.attempts = 0  # local workers that died while it ran alone
        self.node_losses = 0  # remote nodes lost while they held it
        self.solo = False
        self.node = ""  # the node that ran it, once finished
        self.body: FunctionBody = body  # type: ignore[assignment]  # None only until bind()
        self.wire: WireJob = None  # type: ignore[assignment]
        if body is not None:
            self.wire = WireJob(tid, body.digest, args, proto)
        self._raw: Result | None = None
        self._value: Any = _NO_VALUE
        self._replayed = False
        self._counted = False  # counted as finished by the scheduler (guarded by its lock)
        self._sched: Any = None  # the scheduler that queued it, told when the job is cancelled
        self._value_lock = threading.Lock()
        self._held: threading.Lock | None = None  # `lock`, once someone asked for it
        self._sresult: bytes | None = None

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls._finalizes = cls.finalize is not Job.finalize

    def bind(self, body: FunctionBody, args: bytes, proto: int) -> None:
        """Give a job made without a body (ppft 1.7 style) what it runs."""
        self.body = body
        self.wire = WireJob(self.tid, body.digest, args, proto)

    def __repr__(self) -> str:
        # a subclass may skip __init__ (pathos's ApplyResult does)
        tid, group, state = (getattr(self, name, "?") for name in ("tid", "group", "_state"))
        return f"<ppft Job {tid} {state.lower()} group={group!r}>"

    # -- ppft 1.7 interface ----------------------------------------------------------------------------

    @property
    def finished(self) -> bool:
        """True once the job has a result (or failed, or was cancelled)."""
        return self.done()

    @finished.setter
    def finished(self, value: bool) -> None:
        """Accepted and ignored: ppft 1.7 subclasses set it in `finalize`; here the state is the
        future's, which the scheduler sets right after `finalize` returns."""

    @property
    def lock(self) -> threading.Lock:
        """ppft 1.7's `task.lock`: held until the job finishes, so acquiring it waits for the job (pathos
        does). Made on first use."""
        lock = self._held
        if lock is None:
            with self._condition:
                lock = self._held
                if lock is None:
                    lock = threading.Lock()
                    if self._state in (PENDING, RUNNING):
                        lock.acquire()
                    self._held = lock
        return lock

    @property
    def sresult(self) -> bytes:
        """The pickle of `(value, captured_output)` (ppft 1.7's raw result; waits for the job). For a job
        that raised, `value` is None and the output ends with the remote traceback."""
        if self._sresult is None:
            if self._raw is None:
                self._wait_done()
            self._sresult = self._raw_pickle()
        return self._sresult

    @sresult.setter
    def sresult(self, value: bytes) -> None:
        self._sresult = value

    def finalize(self, sresult: bytes) -> None:
        """ppft 1.7's completion hook, for subclasses: called with `sresult` on the callback thread before
        the job counts as finished. This one runs the classic callback, as `_Task.finalize` did."""
        self._sresult = sresult
        if self.callback is not None:
            self._run_classic_callback()

    def __call__(self, raw_result: bool = False) -> Any:
        """Wait for the job and return its value (ppft 1.7's `task()`); re-raises the job's exception.

        `raw_result=True` returns `sresult` instead, the pickle of `(value, captured_output)`, as ppft
        1.7 and pathos expect; for a job that raised, `value` is None and the output ends with the remote
        traceback."""
        if raw_result:
            return self.sresult
        return self.result()

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the job is finished (or `timeout` passes); True if it is."""
        return self._wait_done(timeout)

    # -- Future overrides ------------------------------------------------------------------------------

    def result(self, timeout: float | None = None) -> Any:
        try:
            raw = super().result(timeout)  # raises the job's exception, CancelledError or TimeoutError
        except BaseException:
            if self._state == FINISHED:
                self._replay_output()
            raise
        if self._value is _NO_VALUE:
            self._decode(raw)
        return self._value

    def exception(self, timeout: float | None = None) -> BaseException | None:
        exc = super().exception(timeout)
        if exc is not None:
            self._replay_output()
        return exc

    def cancel(self) -> bool:
        """Cancel the job if it has not left the queue yet; False once it is running or done."""
        cancelled = super().cancel()
        if cancelled:
            if self._held is not None:
                with self._condition:
                    self._release_held()
            if self._sched is not None:
                self._sched.cancelled(self)
        return cancelled

    def claim(self) -> bool:
        """The scheduler takes the job off the queue: False if it was cancelled meanwhile."""
        if self._state == RUNNING:
            return True  # requeued after its worker died
        return self.set_running_or_notify_cancel()

    # -- completion, on the I/O thread -------------------------------------------------------------------

    def _complete(self, result: Result, node: str) -> bool:
        """Store the outcome; True when done-callbacks must run (on the callback thread)."""
        exc = None if result.ok else rebuild_exception(result)
        with self._condition:
            if self._state not in (PENDING, RUNNING):
                return False  # cancelled, or already finished elsewhere: results arrive exactly once
            self._raw = result
            self.node = node
            if exc is None:
                self._result = result
                for waiter in self._waiters:
                    waiter.add_result(self)
            else:
                self._exception = exc
                for waiter in self._waiters:
                    waiter.add_exception(self)
            self._state = FINISHED
            if self._held is not None:
                self._release_held()
            self._condition.notify_all()
            return bool(self._done_callbacks)  # type: ignore[attr-defined]

    def _fail(self, exc: BaseException) -> bool:
        """Finish with an error that did not come from a worker (destroyed server, lost node)."""
        with self._condition:
            if self._state not in (PENDING, RUNNING):
                return False
            self._exception = exc
            self._replayed = True
            for waiter in self._waiters:
                waiter.add_exception(self)
            self._state = FINISHED
            if self._held is not None:
                self._release_held()
            self._condition.notify_all()
            return bool(self._done_callbacks)  # type: ignore[attr-defined]

    def _run_done_callbacks(self) -> None:
        """The `add_done_callback` callbacks; on the callback thread."""
        self._invoke_callbacks()  # type: ignore[attr-defined]

    def _complete_with_callback(self, result: Result, node: str) -> None:
        """ppft 1.7's order, on the callback thread: unpickle, print the job's output, call
        callback(*callbackargs, value) (value None if the job raised), and only then finish the job.
        A subclass that overrides `finalize` gets `finalize(sresult)` instead, which does that in the base."""
        self._raw = result
        self.node = node
        try:
            if self._finalizes:
                self.finalize(self._raw_pickle())
            else:
                self._run_classic_callback()
        finally:
            if self._complete(result, node):
                self._run_done_callbacks()

    def _run_classic_callback(self) -> None:
        raw = self._raw
        assert self.callback is not None and raw is not None
        value = None
        if raw.ok:
            self._decode(raw)
            value = self._value
        else:
            self._replay_output()
        self.callback(*((*self.callbackargs, value)))

    def _release_held(self) -> None:
        """Release `lock` as the job finishes (under `_condition`, after the state changed)."""
        lock = self._held
        if lock is not None and lock.locked():
            lock.release()

    # -- internals -------------------------------------------------------------------------------------

    def _wait_done(self, timeout: float | None = None) -> bool:
        with self._condition:
            if self._state not in (FINISHED, CANCELLED_AND_NOTIFIED, CANCELLED):
                self._condition.wait(timeout)
            return self._state in (FINISHED, CANCELLED_AND_NOTIFIED, CANCELLED)

    def _decode(self, raw: Result) -> None:
        with self._value_lock:
            if self._value is not _NO_VALUE:
                return
            try:
                value = pickle.loads(raw.value)
            except Exception as exc:
                raise ResultDecodeError(
                    f"job {self.tid} finished on {self.node}, but its value cannot be unpickled here: "
                    f"{type(exc).__name__}: {exc}; make sure the value's class imports in this process"
                ) from exc
            self._value = value
        self._replay_output()

    def _replay_output(self) -> None:
        if self._replayed:
            return
        self._replayed = True
        raw = self._raw
        if raw is not None and raw.output:
            sys.stdout.write(raw.output)

    def _raw_pickle(self) -> bytes:
        raw = self._raw
        if raw is None:  # failed before any worker answered (destroyed, lost)
            exc = self._exception
            return pickle.dumps((None, f"{type(exc).__name__}: {exc}\n" if exc else ""))
        pair = (pickle.loads(raw.value), raw.output) if raw.ok else (None, raw.output + raw.traceback)
        try:
            proto = pickle.HIGHEST_PROTOCOL if self.wire is None else self.wire.pickle_protocol
            return pickle.dumps(pair, proto)
        except Exception:  # noqa: BLE001 - a value only dill can pickle (it arrived pickled by dill)
            import dill  # noqa: PLC0415 - only paid for by values that need it

            return bytes(dill.dumps(pair))


def rebuild_exception(result: Result) -> BaseException:
    """The job's exception as raised on the worker, with the remote traceback as `__cause__`."""
    exc: BaseException | None = None
    if result.exception:
        try:
            loaded = pickle.loads(result.exception)
        except Exception:  # noqa: BLE001 - fall back to rebuilding from the type name below
            loaded = None
        if isinstance(loaded, BaseException):
            exc = loaded
    if exc is None:
        module, _, name = result.error_type.rpartition(".")
        cls = getattr(builtins, name, None) if module == "builtins" else None
        if isinstance(cls, type) and issubclass(cls, BaseException):
            try:
                exc = cls(result.error_message)
            except Exception:  # noqa: BLE001 - some builtin exceptions take other arguments
                exc = None
        if exc is None:
            exc = RemoteJobError(result.error_type, result.error_message)
    if result.traceback:
        exc.__cause__ = RemoteTraceback(result.traceback)
    return exc
