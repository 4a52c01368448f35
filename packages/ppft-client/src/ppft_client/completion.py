"""Finishing jobs: a result frame's worth at a time on the I/O thread, their callbacks on the callback thread.

* `complete_jobs` finishes the jobs of one result frame under one acquisition of `JOBS_LOCK`, and says
  what the callback thread must do after: done-callbacks to run, and the classic callbacks (or an overridden
  `finalize`) that ppft 1.7 ran before a job counted as finished (`complete_with_callback`);
* `complete_each` does it job by job, for a frame that `complete_jobs` could not finish whole;
* `fail_job` finishes a job with an error that came from no worker (a destroyed server, a lost node);
* `CallbackThread` (`ppft-callbacks`) runs those callbacks in order, off the I/O thread, so that a slow
  callback never stalls dispatch, and one that raises anything is logged (before its job finishes) and
  stops nothing;
* `make_job` makes a job as `Job(...)` does, in half the time, for `submit`.

It reaches into `Job`'s state (`job.py`) on purpose: this is the other half of that class, the half that
the scheduler drives, kept apart so that `Job` reads as the future its callers see. No code of the user's
ever runs here while `JOBS_LOCK` is held.
"""

from __future__ import annotations

import logging
import sys
import threading
from collections import deque
from typing import TYPE_CHECKING, Any

from ppft_protocol import FunctionBody, Pickled, PPFTError, Result
from ppft_protocol import Job as WireJob

from .job import FINISHED, PENDING, RUNNING, Job
from .joblock import JOBS_LOCK, notify_all_later
from .rebuild import rebuild_exception
from .refs import PICKLED, checked_refs

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable

    from .output import Unshown

__all__ = [
    "CallbackThread",
    "complete_each",
    "complete_jobs",
    "complete_with_callback",
    "fail_job",
    "log_callback_error",
    "make_job",
    "run_done_callbacks",
]

_callbacks_log = logging.getLogger("ppft.callbacks")
_ACTIVE = frozenset((PENDING, RUNNING))
_new_tuple = tuple.__new__  # a named tuple made without the Python-level `__new__` of namedtuple
_new_object = object.__new__


def complete_with_callback(
    job: Job, result: Result, node: str, on_done: Callable[[list[Job]], None], done_lock: Any
) -> None:
    """ppft 1.7's order, on the callback thread: unpickle, print the job's output, call
    callback(*callbackargs, value) (value None if the job raised), and only then finish the job.
    A subclass that overrides `finalize` gets `finalize(sresult)` instead, which does that in the base.
    A callback that raises is logged before its job finishes; the job is finished and counted
    (`on_done`) in one hold of `done_lock`, as the I/O thread does (`Scheduler._on_results`)."""
    job._raw = result
    job.node = node
    try:
        if job._finalizes:
            job.finalize(job._raw_pickle())
        else:
            job._run_classic_callback()
    except BaseException:  # noqa: BLE001 - the classic callback's (or finalize's), SystemExit too
        log_callback_error(job.finalize if job._finalizes else job.callback, job)
    finally:
        with done_lock:
            try:
                more = complete_jobs(((job, result),), node, classic=False)[1]
            finally:
                on_done([job])  # counted even if finishing it failed: `wait` must not hang on it
        if more:
            run_done_callbacks(job)


def run_done_callbacks(job: Job) -> None:
    """The `add_done_callback` callbacks, in order; on the callback thread. One that raises anything
    (`SystemExit`, `KeyboardInterrupt` too) is logged, naming the job, and the next ones still run."""
    for fn in job._done_callbacks:
        try:
            fn(job)
        except BaseException:  # noqa: BLE001 - a callback's error is the caller's bug, not ppft's end
            log_callback_error(fn, job)


def complete_each(
    pairs: list[tuple[Any, Result]], node: str, *, unshown: Unshown | None, wakes: list[Any] | None
) -> tuple[list[Job], list[tuple[Job, Result | None, str]]]:
    """`complete_jobs` raised for the frame `pairs`: finish its jobs one by one; a job whose result cannot
    be handed over fails with the reason, and the others get their results."""
    finished: list[Job] = []
    handoff: list[tuple[Job, Result | None, str]] = []
    for pair in pairs:
        job: Job = pair[0]
        try:
            done, more = complete_jobs([pair], node, unshown=unshown, wakes=wakes)
        except Exception as one:  # noqa: BLE001 - this job's result only
            error = PPFTError(
                f"the result of job {job.tid} arrived from {node} but could not be handed over: "
                f"{type(one).__name__}: {one}"
            )
            if fail_job(job, error):
                handoff.append((job, None, ""))
            finished.append(job)
            continue
        finished += done
        handoff += more
    return finished, handoff


def fail_job(job: Job, exc: BaseException) -> bool:
    """Finish `job` with an error that did not come from a worker (destroyed server, lost node); True when
    its done-callbacks must run (on the callback thread)."""
    with JOBS_LOCK:
        if job._state not in _ACTIVE:
            return False
        job._exception = exc
        job._replayed = True
        job._finish_locked()
        if job._waiting:
            for waiter in job._waiting:
                waiter.add_exception(job)
        return bool(job._done_callbacks)


def log_callback_error(callback: object, job: Job) -> None:
    """Log the exception being handled, raised by `callback` of `job`, with its traceback (one record)."""
    exc = sys.exc_info()[1]
    name = getattr(callback, "__qualname__", None) or type(callback).__qualname__
    _callbacks_log.error(
        "callback %s of job %s raised %s: %s; the job is done, and later callbacks still run",
        name,
        getattr(job, "tid", "?"),
        type(exc).__name__,
        exc,
        exc_info=True,
    )


def make_job(
    server: Any,
    tid: int,
    body: FunctionBody,
    args: bytes | Pickled,
    proto: int,
    sched: Any,
    callback: Callable[..., Any] | None = None,
    callbackargs: tuple[Any, ...] = (),
    group: str = "default",
) -> Job:
    """The job `Job(server, tid, callback, callbackargs, group, body=body, args=args, proto=proto)` would
    make, queued by `sched`, in half the time: calling a class with keywords builds a dict of them for its
    `__init__`, and `submit` makes 100,000 jobs a second."""
    job: Job = _new_object(Job)
    job._state = PENDING
    job.server = server
    job.tid = tid
    job.callback = callback
    job.callbackargs = callbackargs
    job.group = group
    job.body = body
    job.wire = _new_tuple(WireJob, (tid, body.digest, args, proto))
    job._sched = sched
    if PICKLED:  # its arguments hold `put()` refs: checked, and kept alive while it waits
        job.refs = checked_refs(getattr(server, "_refs", None), job)
    return job


def complete_jobs(
    pairs: Iterable[tuple[Any, Result]], node: str, *, classic: bool = True, unshown: Unshown | None = None,
    wakes: list[Any] | None = None,
) -> tuple[list[Job], list[tuple[Job, Result | None, str]]]:  # fmt: skip
    """Finish the jobs of one result frame (on the I/O thread), all under one acquisition of `JOBS_LOCK`.

    Returns `(finished, handoff)`. `finished`: the jobs done here, including any that were cancelled or
    finished already (results arrive exactly once, and the scheduler counts each job once). `handoff`, in
    the frame's order, what the callback thread must do: `(job, None, node)` for a finished job with
    done-callbacks, and `(job, result, node)` for a job with a classic callback or an overridden `finalize`
    (when `classic`), left untouched here: ppft 1.7 finishes those after their callback ran. `unshown`:
    where a finished job's output waits until someone asks for it (or `destroy` shows it). `wakes`: the
    I/O thread's `Loop.wakes`, where the locks of the threads waiting for these jobs go, to be released as
    the loop next blocks (`joblock.notify_all_later`); None: they are woken here."""
    if not isinstance(pairs, (list, tuple)):
        pairs = list(pairs)  # walked twice
    finished: list[Job] = []
    handoff: list[tuple[Job, Result | None, str]] = []
    # exceptions are unpickled before the lock is taken: an exception's class may run code
    errors = {id(job): rebuild_exception(result) for job, result in pairs if not result.ok}
    with JOBS_LOCK:
        for job, result in pairs:
            if classic and (job.callback is not None or job._finalizes):
                handoff.append((job, result, node))
                continue
            finished.append(job)
            if job._state not in _ACTIVE:
                continue  # cancelled, or finished already (failed by a destroy, say)
            job._raw = result  # what `result()` decodes (`_result`, Future's own, stays None)
            job.node = node
            if result.output and unshown is not None and not job._replayed:
                unshown.add(job, result.output, result.stderr_spans)
            if errors and not result.ok:  # `errors` first: most frames have none, and it costs no lookup
                job._exception = errors[id(job)]
            job._state = FINISHED  # _finish_locked, inlined
            if job._held is not None:
                job._release_held()
            if job._sleepers:
                notify_all_later(job._sleepers, wakes)
            if job._waiting:
                for waiter in job._waiting:
                    if result.ok:
                        waiter.add_result(job)
                    else:
                        waiter.add_exception(job)
            if job._done_callbacks:
                handoff.append((job, None, node))
    return finished, handoff


class CallbackThread:
    """Runs user callbacks in order, off the I/O thread; started on first use.

    A callback that raises, whatever it raises (`SystemExit`, `KeyboardInterrupt`, `GeneratorExit`
    included), is logged once with its traceback, naming the job, and this thread goes on with the next
    ones: the job it belongs to counts as finished all the same, so `wait()` never hangs on it.
    `on_done(jobs)` counts finished jobs, with `done_lock` held (`complete_with_callback`)."""

    def __init__(self, on_done: Callable[[list[Job]], None], done_lock: Any) -> None:
        self._queue: deque[tuple[Job, Result | None, str]] = deque()
        self._event = threading.Event()
        self._on_done = on_done
        self._done_lock = done_lock
        self._thread: threading.Thread | None = None
        self._stopping = False

    def put(self, items: list[tuple[Job, Result | None, str]]) -> None:
        self._queue.extend(items)
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="ppft-callbacks", daemon=True)
            self._thread.start()
        self._event.set()

    def stop(self, timeout: float = 5.0) -> None:
        self._stopping = True
        self._event.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout)

    def _run(self) -> None:
        queue = self._queue
        while True:
            self._event.wait()
            self._event.clear()
            while queue:
                job, result, node = queue.popleft()
                try:
                    if result is not None:  # the callbacks log their own errors, done-callbacks too
                        complete_with_callback(job, result, node, self._on_done, self._done_lock)
                    else:
                        run_done_callbacks(job)
                except BaseException:  # noqa: BLE001 - finishing it failed (a bug of ours): logged, and on
                    _callbacks_log.exception("finishing job %s on the callback thread failed", job.tid)
            if self._stopping and not queue:
                return
