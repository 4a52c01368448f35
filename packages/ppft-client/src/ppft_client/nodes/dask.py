"""`DaskNode`: an existing dask.distributed cluster as one of the scheduler's nodes (`dask://HOST:PORT`).

    I/O thread: dispatch --client.submit(batch)--> dask scheduler --> dask worker: the runner runs the batch
    client's loop thread: await gather(batch) --call_soon_threadsafe--> I/O thread: results, or requeue
    watcher thread (ppft-dask, `dask_watch`): open the Client, poll the cluster every second, notice loss

A `ppservers` entry `dask://HOST:PORT` (`dask+tls://HOST:PORT`), a `distributed.Client` or a dask cluster
object (`LocalCluster`, dask-jobqueue's `SLURMCluster`, ...) becomes one node. Jobs go to dask in batches, one
dask task per batch (up to 1,024 tiny jobs; one long job), as many jobs in flight as the cluster's worker
threads allow, so the window follows the cluster as it scales. An adaptive cluster (`cluster.adapt()`) scales
on the work dask can see, so it is shown more: every queued job of a function whose run time is known, up to
512 tasks, and one task while it has no worker at all. The cluster's workers need nothing of ppft: every task
carries the text of ppft's job runner (`ppft_worker.process.travelling_runner`, compressed), which a small
bootstrap, pickled by value, installs once per worker process.

Failures map to ppft's behaviour: dask itself reruns a task whose worker died; a task dask gives up on
(`KilledWorker`) is split into one task per job, and a job that still kills its workers fails with
`WorkerLostError` naming this node; a scheduler that goes away (or a cluster left with no worker) hands the
node's jobs back to the ppft queue at once, to run elsewhere; an unreachable scheduler is logged with the
reason, and tried again with backoff.

A bug in the node's work on the I/O thread (dispatching, a batch's outcome, the cluster's state) takes the
node down as a lost scheduler does: its jobs run elsewhere, the watcher brings it back at its next poll,
and the I/O thread goes on.

This module must never block the I/O thread (only the watcher thread, `dask_watch.ClusterWatch`, waits on
dask), never become the default dask client (`set_as_default=False`), and close only the `Client` it opened
itself: a `Client` or a cluster the user passed stays open. `distributed` is imported only on the watcher
thread, when a node starts.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import itertools
import logging
import pickle
import re
import sys
import traceback
import uuid
from collections.abc import Callable
from typing import Any

from ppft_protocol import Blob, Pickled, PPFTError, Result, is_pickled, printable
from ppft_worker import JobSetupError, UnpicklableResultError, WorkerLostError
from ppft_worker.oob import flatten
from ppft_worker.process import SETUP_ERROR, UNPICKLABLE_RESULT, travelling_runner
from ppft_worker.runtime import (
    Batching,
    Loop,
    RefBook,
    Task,
    TaskQueue,
    Timer,
    job_limit,
    take_batch,
    timeout_message,
    timeout_result,
)

from ..refs import without_refs
from .dask_entries import DaskEntry
from .dask_watch import ClusterWatch, describe, lost_connection

__all__ = ["DaskNode", "add_dask_nodes"]

log = logging.getLogger("ppft.dask")

_BATCH_SCALE = 4  # a dask task costs more scheduling than a frame: each carries 4x a ppserver frame's work
# (`scripts/bench --only dask` measures the ratio to dask's own client)
_MAX_BATCH = 1024
_ADAPTIVE_TASKS = 512  # an adaptive cluster is shown up to this many tasks, so that it sees the demand
_MAX_KNOWN = 4096


def add_dask_nodes(scheduler: Any, entries: list[DaskEntry]) -> None:
    """Add a `DaskNode` per entry to a `Scheduler` (from any thread).

    Results and lost jobs take the scheduler's own paths for its ppserver nodes: `_on_results`, and
    `_node_lost(tasks, node, reason)` where the scheduler bounds how often a job may be lost with its node,
    else `_requeue(tasks)`."""
    node_lost = getattr(scheduler, "_node_lost", None)
    for entry in entries:

        def make(entry: DaskEntry = entry) -> DaskNode:
            def on_lost(tasks: list[Task], reason: str) -> None:
                if node_lost is not None:
                    node_lost(tasks, entry.name, reason)
                else:
                    scheduler._requeue(tasks)

            return DaskNode(scheduler.loop, entry, on_results=scheduler._on_results, on_lost=on_lost)

        scheduler.add_node(entry.name, make)


# -- the node ----------------------------------------------------------------------------------------------


class DaskNode:
    """A dask.distributed cluster reached through one `Client`; node methods run on the I/O thread."""

    kind = "dask"  # as the status page names it

    def __init__(
        self,
        loop: Loop,
        entry: DaskEntry,
        *,
        on_results: Callable[[list[tuple[Task, Result]], str], None],
        on_lost: Callable[[list[Task], str], None],
    ) -> None:
        self.loop = loop
        self.entry = entry
        self.name = entry.name
        self.closed = False
        self.refs: RefBook | None = None  # unused: a dask cluster cannot hold `put()` refs (docs/dask.md)
        self.last_error = ""
        self.permanent = False  # a cluster that cannot be reached now may be reachable later
        self.jobs_done = 0
        self.job_time = 0.0
        self._on_results = on_results
        self._on_lost = on_lost
        self._client: Any = None  # set once connected (I/O thread)
        self._up = False
        self._nthreads = 0
        self._adaptive = False
        self._inflight: dict[str, list[Task]] = {}  # dask key -> the batch it runs
        self._futures: dict[str, Any] = {}  # dask key -> its Future (dropping it releases the task)
        self._deadlines: dict[str, Timer] = {}  # dask key -> the timer of its one job's time limit
        self._overdue: set[str] = set()  # keys of timed-out jobs whose tasks still hold a dask thread
        self._count = 0  # jobs in flight
        self._batching = Batching(prefetch_long=True)
        self._known: set[bytes] = set()  # digests whose run time a result has shown
        self._id = uuid.uuid4().hex[:12]
        self._keys = itertools.count()
        self._watcher = ClusterWatch(entry, self._post_running, self._post_down, lambda: self._up)

    # -- node interface (I/O thread) -------------------------------------------------------------------

    @property
    def ready(self) -> bool:
        return self._up and not self.closed

    @property
    def workers(self) -> int:
        return self._nthreads if self.ready else 0

    @property
    def inflight(self) -> int:
        return self._count

    @property
    def status(self) -> str:
        """Why the node takes no jobs now, in a few words ("" when it does)."""
        if self.ready and (self._nthreads or self._adaptive):
            return ""
        if self.ready:
            return "connected, but the cluster has no workers"
        return self.last_error or "connecting"

    def start(self) -> None:
        self._watcher.start()

    def _post_running(self, client: Any, nthreads: int, adaptive: bool) -> None:
        """From the watcher thread: the cluster runs (on the I/O thread, `_running`)."""
        self.loop.call_soon_threadsafe(
            functools.partial(self._running, client, nthreads, adaptive), self._crashed
        )

    def _post_down(self, reason: str, final: bool) -> None:
        """From the watcher thread: the cluster cannot be used, now or for good (on the I/O thread)."""
        self.loop.call_soon_threadsafe(functools.partial(self._down, reason, final=final), self._crashed)

    def dispatch(self, queue: TaskQueue) -> int:
        """Submit batches from the head of `queue` while the window has room; returns how many jobs."""
        if not self.ready:
            return 0
        threads = self._nthreads or (1 if self._adaptive else 0)  # an adaptive cluster grows from zero
        sent = 0
        while queue and threads:
            digest = queue[0].body.digest
            batch_size, window = self._limits(digest)
            if self._adaptive and digest in self._known:  # dask scales on the work it sees: show it
                if len(self._inflight) >= _ADAPTIVE_TASKS:
                    break
                limit = batch_size
            else:
                free = threads * window - self._count
                if free <= 0 or (self._count and free < batch_size):
                    break
                limit = min(free, batch_size)
            batch = take_batch(queue, limit, self._batching)
            if self.refs is not None:  # the client made refs: jobs using one fail here (docs/dask.md)
                batch = without_refs(batch, self.name, self._on_results)
            if not batch:
                continue
            try:
                submitted = self._submit(batch)
            except BaseException as exc:
                self._on_lost(batch, f"internal error in the I/O thread ({describe(exc)})")  # not lost
                raise
            if not submitted:
                break
            sent += len(batch)
        return sent

    def terminate(self, task: Task) -> bool:
        """dask cannot stop a task that runs (docs/dask.md): the job is cancelled here, and whatever its
        frame brings back for it is dropped (the scheduler finished it as cancelled)."""
        return False

    def take_inflight(self) -> list[Task]:
        tasks = [task for key, batch in self._inflight.items() if key not in self._overdue for task in batch]
        self._inflight.clear()
        self._futures.clear()  # dask forgets the tasks nobody holds a Future of
        self._overdue.clear()
        for timer in self._deadlines.values():
            timer.cancel()
        self._deadlines.clear()
        self._count = 0
        return tasks

    def internal_error(self, exc: BaseException, what: str) -> None:
        """A bug while the scheduler used this node (`what`): logged once; the node goes down as when its
        scheduler is lost (its jobs run elsewhere) until the watcher's next poll brings it back."""
        self.loop.report(exc, f"{what} failed")
        self._crashed(exc)

    def _crashed(self, exc: BaseException) -> None:
        """The loop's error handler for this node's callbacks."""
        self._down(f"internal error in the I/O thread ({describe(exc)})")

    def close(self) -> None:
        """Leave for good: the watcher closes the Client if this node opened it (waited for, bounded)."""
        self.closed = True
        self._up = False
        self._futures.clear()
        self._watcher.stop(wait=self.entry.owns_client and self._client is not None)

    # -- sending ---------------------------------------------------------------------------------------

    def _limits(self, digest: bytes) -> tuple[int, int]:
        batch, window = self._batching.limits(digest)
        if batch > 1:  # tiny jobs: bigger tasks, two of them per thread
            batch = min(_MAX_BATCH, batch * _BATCH_SCALE)
            window = 2 * batch
        return batch, window

    def _submit(self, batch: list[Task]) -> bool:
        """Send one batch as one dask task; False (the batch back in the queue) if the Client refused."""
        bodies: dict[bytes, tuple[Any, ...]] = {}
        jobs = []
        for task in batch:
            body = task.body
            if body.digest not in bodies:
                bodies[body.digest] = (body.digest, body.name, tuple(body.sources), tuple(body.imports),
                                       bytes(body.pickled))  # fmt: skip
            job_id, digest, args, protocol = task.wire
            jobs.append((job_id, digest, _plain(args), protocol))
        payload = pickle.dumps((tuple(bodies.values()), tuple(jobs)), 5)
        runner = travelling_runner()
        client = self._client
        key = f"ppft-{_label(batch[0].body.name)}-{self._id}-{next(self._keys)}"
        try:
            future = client.submit(runner.boot, runner.key, runner.blob, payload, key=key, pure=False)
            client.loop.add_callback(self._track, client, key, future)
        except Exception as exc:  # noqa: BLE001 - the Client closed under us: the jobs run elsewhere
            self._down(f"the dask Client refused the jobs ({describe(exc)})", also=batch)
            return False
        self._inflight[key] = batch
        self._futures[key] = future
        self._count += len(batch)
        limit = job_limit(batch[0]) if len(batch) == 1 else None
        if limit is not None:
            expire = functools.partial(self._expire, key, limit)
            self._deadlines[key] = self.loop.call_later(limit, expire, self._crashed)
        return True

    def _expire(self, key: str, limit: float) -> None:
        """The time limit of the one job of task `key` is up: dask cannot stop the task, so the job fails
        here with `JobTimeoutError`, and the task keeps its place in the window (its dask thread is busy
        until it ends; its result is then dropped)."""
        self._deadlines.pop(key, None)
        batch = self._inflight.get(key)
        if batch is None or key in self._overdue:
            return
        self._overdue.add(key)
        (task,) = batch
        name = task.body.name or "a pickled callable"
        job = getattr(task, "client_id", task.wire[0])
        note = (
            " (counted from when it was handed to dask, which cannot stop a running task: it runs on in its "
            "dask worker thread until it ends, and its result is dropped)"
        )
        message = timeout_message(f"job {job} ({name})", self.name, limit, note=note)
        log.info("dask cluster %s: job %s ran past its time limit of %g s", self.name, job, limit)
        self._on_results([(task, timeout_result(task, message))], self.name)

    async def _track(self, client: Any, key: str, future: Any) -> None:
        """On the Client's event loop: wait for the batch, fetch its results, hand them to the I/O thread."""
        try:
            outcome: Any = await client.gather(future, asynchronous=True)
        except BaseException as exc:  # noqa: BLE001 - any failure is the batch's outcome, judged on the I/O thread
            outcome = exc
        self.loop.call_soon_threadsafe(functools.partial(self._finished, key, outcome), self._crashed)

    # -- results (I/O thread) --------------------------------------------------------------------------

    def _finished(self, key: str, outcome: Any) -> None:
        batch = self._inflight.pop(key, None)
        self._futures.pop(key, None)
        if batch is None:  # requeued already (the scheduler was lost, the node closed)
            return
        self._count -= len(batch)
        timer = self._deadlines.pop(key, None)
        if timer is not None:
            timer.cancel()
        if key in self._overdue:  # its job timed out: the task has ended, its thread is free again
            self._overdue.discard(key)
            return
        try:
            self._outcome(batch, outcome)
        except BaseException:
            # Back on the books before the error handler takes the node down: the batch runs elsewhere
            # (the jobs of it that did finish are not run again).
            self._inflight[key] = batch
            self._count += len(batch)
            raise

    def _outcome(self, batch: list[Task], outcome: Any) -> None:
        if isinstance(outcome, list) and len(outcome) == len(batch):
            self._results(batch, outcome)
        elif _is_killed_worker(outcome):
            self._killed(batch, outcome)
        elif isinstance(outcome, (asyncio.CancelledError, concurrent.futures.CancelledError, OSError)):
            if self.closed:
                return
            status = str(getattr(self._client, "status", "closed"))
            if status == "running":
                reason = f"dask dropped the task ({describe(outcome)})"
                log.warning(
                    "dask cluster %s: %s of %d job(s); they run again",
                    self.name,
                    printable(reason, 1000),
                    len(batch),
                )
                self._on_lost(batch, reason)
            else:  # the Client lost its scheduler and cancelled every task: all go back at once
                self._down(lost_connection(status), also=batch)
        else:
            if not isinstance(outcome, BaseException):
                got = type(outcome).__name__
                outcome = PPFTError(f"the dask task returned a {got}, not the results of its batch")
            self._on_results([(task, self._batch_failure(task, outcome)) for task in batch], self.name)

    def _results(self, batch: list[Task], outcome: list[tuple[Any, ...]]) -> None:
        pairs: list[tuple[Task, Result]] = []
        timings: list[tuple[bytes, float]] = []
        total = 0.0
        for task, fields in zip(batch, outcome, strict=True):
            result = Result(*fields)
            if not result.ok and not result.exception:
                result = _with_ppft_exception(result)
            pairs.append((task, result))
            timings.append((task.wire.digest, result.wall_time))
            total += result.wall_time
        self.jobs_done += len(pairs)
        self.job_time += total
        self._batching.learn_results(timings)
        if len(self._known) >= _MAX_KNOWN:
            self._known.clear()
        self._known.update(digest for digest, _ in timings)
        self._on_results(pairs, self.name)

    def _killed(self, batch: list[Task], exc: BaseException) -> None:
        """dask gave up on the task: one task per job, so that only the job that kills workers fails."""
        if len(batch) > 1 and self.ready:
            for index, task in enumerate(batch):
                task.solo = True
                if not self._submit([task]):  # that one is back in the queue; so go the others
                    self._on_lost(batch[index + 1 :], self.last_error)
                    return
            return
        if len(batch) > 1:
            self._on_lost(batch, "the cluster went away while dask gave up on the task (KilledWorker)")
            return
        task = batch[0]
        message = (
            f"every dask worker of {self.name} that ran job {task.wire.job_id} died ({describe(exc)}); dask "
            "gave up on it (KilledWorker), so it is not retried again"
        )
        self._on_results([(task, _lost_result(task, message))], self.name)

    def _batch_failure(self, task: Task, exc: BaseException) -> Result:
        """A batch that failed as a whole, before or around the runner (say, a worker without dill)."""
        text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
        message = f"dask node {self.name} could not run the job: {type(exc).__name__}: {exc}"
        try:
            data = pickle.dumps(exc)
            pickle.loads(data)
        except Exception:  # noqa: BLE001 - the type name, message and traceback still travel
            data = b""
        return Result(task.wire.job_id, False, b"", "", 0.0, 0.0, _type_name(type(exc)), message, text, data)

    # -- the cluster's state (posted by the watcher, run on the I/O thread) ------------------------------

    def _running(self, client: Any, nthreads: int, adaptive: bool) -> None:
        if self.closed:
            return
        if not self._up:
            if self.last_error:
                log.warning("dask cluster %s is back with %d worker thread(s)", self.name, nthreads)
            else:
                log.info("connected to dask cluster %s (%d worker threads)", self.name, nthreads)
            self.last_error = ""
        elif nthreads != self._nthreads:
            log.info("dask cluster %s now has %d worker thread(s)", self.name, nthreads)
        self._client = client
        self._up = True
        self._adaptive = adaptive
        self._nthreads = nthreads
        if nthreads == 0 and not adaptive and self._inflight:
            tasks = self.take_inflight()
            log.warning(
                "dask cluster %s has no worker left; its %d job(s) run elsewhere", self.name, len(tasks)
            )
            self._on_lost(tasks, "the dask cluster has no worker left")
        self.loop.wake()

    def _down(self, reason: str, *, final: bool = False, also: list[Task] | None = None) -> None:
        if self.closed:
            return
        self._up = False
        tasks = (also or []) + self.take_inflight()
        if tasks:
            log.warning("lost dask cluster %s with %d job(s) in flight: %s; they run elsewhere", self.name,
                        len(tasks), printable(reason, 1000))  # fmt: skip
            self._on_lost(tasks, reason)
        elif reason != self.last_error:
            log.warning("dask cluster %s cannot be used: %s", self.name, printable(reason, 1000))
        self.last_error = reason
        if final:
            self.closed = True


# -- helpers ---------------------------------------------------------------------------------------------


def _label(name: str) -> str:
    """The function's name as dask's dashboard groups tasks by it (ppft-<name>-...)."""
    return re.sub(r"[^A-Za-z0-9_.]", "_", name.rsplit(".", 1)[-1])[:40] or "job"


def _type_name(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def _is_killed_worker(exc: object) -> bool:
    scheduler = sys.modules.get("distributed.scheduler")
    killed = getattr(scheduler, "KilledWorker", None)
    return isinstance(killed, type) and isinstance(exc, killed)


def _with_ppft_exception(result: Result) -> Result:
    """The runner names ppft's own error types without pickles (the worker cannot import them)."""
    if result.error_type == SETUP_ERROR:
        exc: PPFTError = JobSetupError(result.error_message)
    elif result.error_type == UNPICKLABLE_RESULT:
        exc = UnpicklableResultError(result.error_message)
    else:
        return result
    return result._replace(exception=pickle.dumps(exc))


def _lost_result(task: Task, message: str) -> Result:
    exc = WorkerLostError(message)
    return Result(task.wire.job_id, False, b"", "", 0.0, 0.0, _type_name(WorkerLostError), message, "",
                  pickle.dumps(exc))  # fmt: skip


def _plain(args: Blob | Pickled) -> bytes:
    """A job's arguments as the plain pickle a dask worker reads (out-of-band buffers in band)."""
    if type(args) is bytes:
        return args
    if isinstance(args, Pickled) or is_pickled(args):
        return flatten(args)
    return bytes(args)
