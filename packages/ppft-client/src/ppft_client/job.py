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
printed once, when its value or exception is first retrieved (or before its classic callback runs), as
ppft 1.7 does, stdout's part on stdout and stderr's on stderr (`output.write_output`); a finished job whose
output nobody asked for is kept in its scheduler's `Unshown` until `destroy()` shows it, and one whose
`sresult` was taken has handed its output over with it. With live output, the text was printed as the job
wrote it, and nothing is printed again.

A job is light, because a client makes 100,000 of them a second and the garbage collector walks every
container object made: where a plain `Future` makes eleven, a job makes one, itself. Its state is guarded
by `JOBS_LOCK`, which all jobs share (`joblock`), so the I/O thread claims and finishes a whole frame of
jobs in one acquisition (`Job.claim_all`, `completion.complete_jobs`); its `_condition`, `_waiters` and
`_done_callbacks` are made on first use. Everything `Future`, `concurrent.futures.wait`, `as_completed` and
asyncio call on a future keeps its meaning. No code of the user's may ever run while the lock is held.
"""

from __future__ import annotations

import logging
import pickle
import threading
from concurrent.futures import CancelledError, Future
from concurrent.futures import TimeoutError as FutureTimeoutError
from typing import TYPE_CHECKING, Any, ClassVar

from ppft_protocol import FunctionBody, Pickled, Result, is_pickled
from ppft_protocol import Job as WireJob
from ppft_protocol.cpython import FUTURE_STATES

from .errors import ResultDecodeError
from .joblock import JOBS_LOCK, Sleepers, new_condition
from .output import Unshown, write_output
from .shipping import unpickle

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = ["FINISHED", "PENDING", "RUNNING", "Job"]

# The states `Future` keeps in `_state` (`ppft_protocol.cpython.FUTURE_STATES` says why they are copied).
PENDING, RUNNING, CANCELLED, CANCELLED_AND_NOTIFIED, FINISHED = FUTURE_STATES
LOGGER = logging.getLogger("concurrent.futures")  # where Future logs a callback that raised

_NO_VALUE = object()
_DONE = frozenset((CANCELLED, CANCELLED_AND_NOTIFIED, FINISHED))
_STARTED = frozenset((RUNNING, FINISHED))

_acquire = JOBS_LOCK.acquire  # taken by hand on the hot paths: a `with` statement costs twice as much
_release = JOBS_LOCK.release
_LOCK = JOBS_LOCK
_new_tuple = tuple.__new__  # a named tuple made without the Python-level `__new__` of namedtuple
_new_object = object.__new__


class Job(Future):  # type: ignore[type-arg]
    """One submitted job."""

    _finalizes: ClassVar[bool] = False
    """True for a subclass that overrides `finalize`: the scheduler then completes it through the hook."""

    # What most jobs never change is read from the class until a job sets its own (a store less per job).
    _state = PENDING
    _result: Any = None
    _exception: BaseException | None = None
    _done_callbacks: Any = ()  # a list once a callback is added
    _waiting: list[Any] | None = None  # `_waiters`, once concurrent.futures.wait or as_completed look
    _sleepers: Sleepers | None = None  # `_condition`, once a thread waits or Future's own methods look
    callback: Callable[..., Any] | None = None
    callbackargs: tuple[Any, ...] = ()
    group = "default"
    attempts = 0  # local workers that died while it ran alone
    node_losses = 0  # remote nodes lost while they held it
    solo = False
    timeout: float | None = None  # seconds it may run on a worker (`submit(timeout=)`); None: no limit
    node = ""  # the node that ran it, once finished
    _raw: Result | None = None
    _value: Any = _NO_VALUE
    _replayed = False  # its output was shown (or printed live, or shown by destroy): never again
    _live_shown = 0  # live output: bytes of its output printed so far
    _live_mark = 0  # live output: the printer's mark of its last lines (`LiveView.finish`)
    _unshown_key = 0  # its entry in its scheduler's `Unshown`, while its output waits there
    kept_output: Any = None  # what it wrote before a worker died under it (`ppft_worker.pool.output`)
    _counted = False  # counted as finished by the scheduler (guarded by its lock)
    _sched: Any = None  # the scheduler that queued it, told when the job is cancelled
    refs: Any = ()  # the `put()` refs its arguments hold, kept alive while it waits (`refs`)
    _held: threading.Lock | None = None  # `lock`, once someone asked for it
    _sresult: bytes | None = None

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
        `_Task` subclass) gets one from `Server.insert(sfunc, sargs, task)`.

        `Future.__init__` is not called: it would make the condition, lock and lists a job does without.
        (`completion.make_job` makes the same job faster; keep the two in step.)"""
        self._state = PENDING  # read on every step of the way: an attribute of its own reads faster
        self.server = server
        self.tid = tid
        self.callback = callback
        self.callbackargs = callbackargs
        self.group = group
        self.body: FunctionBody = body  # type: ignore[assignment]  # None only until bind()
        self.wire: WireJob = (
            None if body is None else _new_tuple(WireJob, (tid, body.digest, args, proto))  # type: ignore[assignment]
        )

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls._finalizes = cls.finalize is not Job.finalize

    def bind(self, body: FunctionBody, args: bytes | Pickled, proto: int) -> None:
        """Give a job made without a body (ppft 1.7 style) what it runs."""
        self.body = body
        self.wire = WireJob(self.tid, body.digest, args, proto)

    def __repr__(self) -> str:
        # a subclass may skip __init__ (pathos's ApplyResult does)
        tid, group, state = (getattr(self, name, "?") for name in ("tid", "group", "_state"))
        return f"<ppft Job {tid} {state.lower()} group={group!r}>"

    @property
    def _condition(self) -> threading.Condition:
        """`Future`'s condition, made on first use: most jobs are done before anyone waits for them."""
        sleepers = self._sleepers
        if sleepers is None:
            with _LOCK:
                sleepers = self._sleepers
                if sleepers is None:
                    sleepers = self._sleepers = new_condition()
        return sleepers  # type: ignore[return-value]  # a Condition in all but its class

    @_condition.setter
    def _condition(self, value: threading.Condition) -> None:
        self._sleepers = value  # type: ignore[assignment]

    @property
    def _waiters(self) -> list[Any]:
        """`Future`'s waiters (of `concurrent.futures.wait` and `as_completed`), made on first use; read
        and changed with `_LOCK` held, as `Future` does with its condition."""
        waiting = self._waiting
        if waiting is None:
            waiting = self._waiting = []
        return waiting

    @_waiters.setter
    def _waiters(self, value: list[Any]) -> None:
        self._waiting = value

    # -- ppft 1.7 interface ----------------------------------------------------------------------------

    @property
    def finished(self) -> bool:
        """True once the job has a result (or failed, or was cancelled)."""
        return self._state in _DONE

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
            with _LOCK:
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
            self._handed_over()
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
        if self._state != FINISHED:  # a finished job never changes again: read without the lock
            with _LOCK:
                if self._state not in _DONE:
                    self._condition.wait(timeout)
                state = self._state
            if state != FINISHED:
                raise FutureTimeoutError() if state not in _DONE else CancelledError()
        exc = self._exception
        if exc is not None:
            self._replay_output()
            try:
                raise exc
            finally:
                del exc, self  # as Future.result: no cycle through the traceback's frame
        value = self._value
        if value is _NO_VALUE:
            value = self._decode()
        return value

    def exception(self, timeout: float | None = None) -> BaseException | None:
        exc = super().exception(timeout)
        if exc is not None:
            self._replay_output()
        return exc

    def done(self) -> bool:
        return self._state in _DONE  # one read of one attribute: no lock needed to see it

    def add_done_callback(self, fn: Callable[[Future[Any]], object]) -> None:
        with _LOCK:
            if self._state not in _DONE:
                if self._done_callbacks:
                    self._done_callbacks.append(fn)
                else:
                    self._done_callbacks = [fn]
                return
        try:
            fn(self)
        except Exception:
            LOGGER.exception("exception calling callback for %r", self)

    def cancel(self) -> bool:
        """Cancel the job if it has not left the queue yet; False once it is running or done."""
        if self._state in _STARTED:  # for good: a started job never goes back to the queue's state
            return False
        cancelled = super().cancel()
        if cancelled:
            if self._held is not None:
                with _LOCK:
                    self._release_held()
            if self._sched is not None:
                self._sched.cancelled(self)
        return cancelled

    def terminate(self) -> bool:
        """Stop the job wherever it is: a queued job is cancelled (as `cancel()`); a running one is stopped
        by killing its worker, which is replaced (the jobs batched behind it run again, charged nothing),
        and it raises `concurrent.futures.CancelledError`. True if it did either; False for a job that is
        done already (finished, cancelled or terminated)."""
        if self._state in _DONE:
            return False
        if self.cancel():
            return True
        with _LOCK:
            if self._state != RUNNING:
                return False
            self._state = CANCELLED_AND_NOTIFIED
            self._replayed = True  # it never gets a result: nothing of it is printed
            if self._held is not None:
                self._release_held()
            sleepers = self._sleepers
            if sleepers:
                sleepers.notify_all()
            if self._waiting:
                for waiter in self._waiting:
                    waiter.add_cancelled(self)
            callbacks = list(self._done_callbacks)
        sched = self._sched
        if sched is not None:
            sched.terminated(self)
        for fn in callbacks:
            try:
                fn(self)
            except Exception:
                LOGGER.exception("exception calling callback for %r", self)
        return True

    def set_running_or_notify_cancel(self) -> bool:
        """`Future`'s, safe against a second call for a cancelled job: the I/O thread (dropping it from the
        queue) and `Executor.shutdown(cancel_futures=True)` (telling the waiters at once) may both make it."""
        with _LOCK:
            if self._state == CANCELLED_AND_NOTIFIED:
                return False
            return super().set_running_or_notify_cancel()

    def claim(self) -> bool:
        """The scheduler takes the job off the queue: False if it was cancelled meanwhile."""
        state = self._state
        if state == RUNNING:
            return True  # requeued after its worker died
        if state == PENDING:
            _acquire()
            try:
                if self._state == PENDING:
                    self._state = RUNNING
                    return True
            finally:
                _release()
        return self.set_running_or_notify_cancel()  # cancelled: tells the waiters of as_completed/wait

    @staticmethod
    def claim_all(jobs: list[Job]) -> list[Job]:
        """`claim` for a frame's worth of jobs (`take_batch` calls it), under one acquisition of the lock:
        the jobs that may run, in order."""
        claimed: list[Job] = []
        dropped: list[Job] = []
        _acquire()
        try:
            for job in jobs:
                state = job._state
                if state == PENDING:
                    job._state = RUNNING
                    claimed.append(job)
                elif state == RUNNING:  # requeued after its worker died
                    claimed.append(job)
                else:
                    dropped.append(job)
        finally:
            _release()
        for job in dropped:
            job.set_running_or_notify_cancel()  # cancelled: tells the waiters of as_completed/wait
        return claimed

    # -- completion (`completion`), on the I/O thread and the callback thread -----------------------------

    def _finish_locked(self) -> None:
        """The state becomes FINISHED and whoever waits is told (with `_LOCK` held; waiters apart)."""
        self._state = FINISHED
        if self._held is not None:
            self._release_held()
        sleepers = self._sleepers
        if sleepers:
            sleepers.notify_all()

    def _run_classic_callback(self) -> None:
        raw = self._raw
        assert self.callback is not None and raw is not None
        value = None
        if raw.ok:
            value = self._value
            if value is _NO_VALUE:
                value = self._decode(raw)
        else:
            self._replay_output()
        self.callback(*((*self.callbackargs, value)))

    def _release_held(self) -> None:
        """Release `lock` as the job finishes (under `_LOCK`, after the state changed)."""
        lock = self._held
        if lock is not None and lock.locked():
            lock.release()

    # -- internals -------------------------------------------------------------------------------------

    def _wait_done(self, timeout: float | None = None) -> bool:
        with _LOCK:
            if self._state not in _DONE:
                self._condition.wait(timeout)
            return self._state in _DONE

    def _decode(self, raw: Result | None = None) -> Any:
        """Unpickle the value (on the caller's thread, without the lock: it may run the user's code); the
        first thread to finish wins, so every caller gets the very same object."""
        if raw is None:
            raw = self._raw
            if raw is None:  # finished by `Future.set_result`, not by a worker
                return self._result
        try:
            value = pickle.loads(raw.value)  # type: ignore[arg-type]
        except (pickle.UnpicklingError, TypeError) as exc:  # TypeError: a `Pickled` (a local pool's segment)
            value = _buffered_value(self, raw.value, exc)
        except Exception as exc:
            raise ResultDecodeError(
                f"job {self.tid} finished on {self.node}, but its value cannot be unpickled here: "
                f"{type(exc).__name__}: {exc}; make sure the value's class imports in this process"
            ) from exc
        _acquire()
        try:
            if self._value is _NO_VALUE:
                self._value = value
            else:
                value = self._value
        finally:
            _release()
        if raw.output:  # most jobs print nothing: no flag to set then
            self._replay_output()
        return value

    def _replay_output(self) -> None:
        """Show the job's output on the caller's streams, the first time only."""
        if self._replayed:
            if self._live_mark:  # printed live: the caller's next words come after its last lines
                live = getattr(self._sched, "live", None)
                if live is not None:
                    live.wait(self._live_mark)
            return
        with _LOCK:
            if self._replayed:
                return
            self._replayed = True
            unshown = self._unshown()
            if unshown:
                unshown.discard(self)
        raw = self._raw
        if raw is not None and raw.output:
            write_output(raw.output, raw.stderr_spans)

    def _handed_over(self) -> None:
        """The output left with `sresult` (its taker shows it, as pathos does): `destroy` does not."""
        unshown = self._unshown()
        if unshown:
            with _LOCK:
                unshown.discard(self)

    def _unshown(self) -> Unshown | None:
        sched = self._sched
        return getattr(sched, "unshown", None) if sched is not None else None

    def _raw_pickle(self) -> bytes:
        raw = self._raw
        if raw is None:  # failed before any worker answered (destroyed, lost)
            exc = self._exception
            return pickle.dumps((None, f"{type(exc).__name__}: {exc}\n" if exc else ""))
        pair = (unpickle(raw.value), raw.output) if raw.ok else (None, raw.output + raw.traceback)
        try:
            proto = pickle.HIGHEST_PROTOCOL if self.wire is None else self.wire.pickle_protocol
            return pickle.dumps(pair, proto)
        except Exception:  # noqa: BLE001 - a value only dill can pickle (it arrived pickled by dill)
            import dill  # noqa: PLC0415 - only paid for by values that need it

            return bytes(dill.dumps(pair))


def _buffered_value(job: Job, value: Any, exc: Exception) -> Any:
    """The value of a result that came with out-of-band buffers (protocol version 2), else the error."""
    if not is_pickled(value):
        raise ResultDecodeError(
            f"job {job.tid} finished on {job.node}, but its value cannot be unpickled here: "
            f"{type(exc).__name__}: {exc}; make sure the value's class imports in this process"
        ) from exc
    try:
        return unpickle(value)
    except Exception as exc2:
        raise ResultDecodeError(
            f"job {job.tid} finished on {job.node}, but its value cannot be unpickled here: "
            f"{type(exc2).__name__}: {exc2}; make sure the value's class imports in this process"
        ) from exc2
