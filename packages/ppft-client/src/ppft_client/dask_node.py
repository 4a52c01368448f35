"""`DaskNode`: an existing dask.distributed cluster as one of the scheduler's nodes (`dask://HOST:PORT`).

    I/O thread: dispatch --client.submit(batch)--> dask scheduler --> dask worker: the runner runs the batch
    client's loop thread: await gather(batch) --call_soon_threadsafe--> I/O thread: results, or requeue
    watcher thread (ppft-dask): open the Client, poll the cluster's thread count every second, notice loss

A `ppservers` entry `dask://HOST:PORT` (`dask+tls://HOST:PORT`), a `distributed.Client` or a dask cluster
object (`LocalCluster`, dask-jobqueue's `SLURMCluster`, ...) becomes one node. Jobs go to dask in batches, one
dask task per batch (up to 1,024 tiny jobs; one long job), as many jobs in flight as the cluster's worker
threads allow, so the window follows the cluster as it scales. An adaptive cluster (`cluster.adapt()`) scales
on the work dask can see, so it is shown more: every queued job of a function whose run time is known, up to
512 tasks, and one task while it has no worker at all. The cluster's workers need nothing of ppft: every task
carries `dask_runner`'s source text (compressed), which a small bootstrap, pickled by value, executes once
per worker process.

Failures map to ppft's behaviour: dask itself reruns a task whose worker died; a task dask gives up on
(`KilledWorker`) is split into one task per job, and a job that still kills its workers fails with
`WorkerLostError` naming this node; a scheduler that goes away (or a cluster left with no worker) hands the
node's jobs back to the ppft queue at once, to run elsewhere; an unreachable scheduler is logged with the
reason, and tried again with backoff.

A bug in the node's work on the I/O thread (dispatching, a batch's outcome, the cluster's state) takes the
node down as a lost scheduler does: its jobs run elsewhere, the watcher brings it back at its next poll,
and the I/O thread goes on.

This module must never block the I/O thread (only the watcher thread waits on dask), never become the
default dask client (`set_as_default=False`), and close only the `Client` it opened itself: a `Client` or a
cluster the user passed stays open. `distributed` is imported only on the watcher thread, when a node starts.
"""

from __future__ import annotations

import asyncio
import builtins
import concurrent.futures
import functools
import hashlib
import importlib.resources
import importlib.util
import itertools
import logging
import pickle
import re
import sys
import threading
import traceback
import uuid
import zlib
from collections.abc import Callable
from typing import Any, NamedTuple

from ppft_protocol import PPFTError, Result, printable
from ppft_worker.batching import Batching
from ppft_worker.errors import WorkerLostError
from ppft_worker.execute import JobSetupError, UnpicklableResultError
from ppft_worker.loop import Loop
from ppft_worker.tasks import Task, TaskQueue, take_batch

from .dask_entries import CONNECT_TIMEOUT, DaskEntry, probe
from .dask_runner import SETUP_ERROR, UNPICKLABLE_RESULT

__all__ = ["DaskNode", "add_dask_nodes"]

log = logging.getLogger("ppft.dask")

_POLL_INTERVAL = 1.0  # how often the watcher reads the cluster's thread count and the Client's state
_CLOSE_TIMEOUT = 5.0
_MAX_BACKOFF = 10.0
_BATCH_SCALE = 4  # a dask task costs ~1 ms of scheduling: each carries 4x a ppserver frame's work
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


# -- what travels to the workers ---------------------------------------------------------------------------

_BOOT_SOURCE = '''
def ppft_dask_task(runner_key, runner_blob, payload):
    """Run one batch of ppft jobs on a dask worker, installing ppft's runner once per process."""
    import sys
    runner = sys.modules.get(runner_key)
    if runner is None:
        import types, zlib
        module = types.ModuleType(runner_key, "ppft's job runner for dask workers")
        source = zlib.decompress(runner_blob).decode("utf-8")
        exec(compile(source, "<ppft dask runner>", "exec"), module.__dict__)
        runner = sys.modules.setdefault(runner_key, module)
    import pickle
    return runner.run_batch(*pickle.loads(payload))
'''


class _Runner(NamedTuple):
    key: str  # the module name the runner gets on a worker: carries the digest of its text
    blob: bytes  # its source, compressed
    boot: Callable[..., Any]  # the bootstrap, a function of no importable module (so pickled by value)


@functools.cache
def _runner() -> _Runner:
    """The runner's text and the bootstrap, made once per process."""
    source = importlib.resources.files(__package__).joinpath("dask_runner.py").read_text("utf-8")
    key = f"__ppft_dask_runner_{hashlib.sha256(source.encode()).hexdigest()[:16]}__"
    # a namespace that no module owns: cloudpickle then sends the function's code, not a reference
    namespace: dict[str, Any] = {"__name__": "__ppft_dask_boot__", "__builtins__": builtins}
    exec(compile(_BOOT_SOURCE, "<ppft dask bootstrap>", "exec"), namespace)
    return _Runner(key, zlib.compress(source.encode("utf-8"), 9), namespace["ppft_dask_task"])


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
        self._count = 0  # jobs in flight
        self._batching = Batching(prefetch_long=True)
        self._known: set[bytes] = set()  # digests whose run time a result has shown
        self._id = uuid.uuid4().hex[:12]
        self._keys = itertools.count()
        self._stop = threading.Event()
        self._watcher = threading.Thread(target=self._watch, name=f"ppft-dask {self.name}", daemon=True)

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
            if not batch:
                continue
            try:
                submitted = self._submit(batch)
            except BaseException as exc:
                self._on_lost(batch, f"internal error in the I/O thread ({_reason(exc)})")  # not lost
                raise
            if not submitted:
                break
            sent += len(batch)
        return sent

    def take_inflight(self) -> list[Task]:
        tasks = [task for batch in self._inflight.values() for task in batch]
        self._inflight.clear()
        self._futures.clear()  # dask forgets the tasks nobody holds a Future of
        self._count = 0
        return tasks

    def internal_error(self, exc: BaseException, what: str) -> None:
        """A bug while the scheduler used this node (`what`): logged once; the node goes down as when its
        scheduler is lost (its jobs run elsewhere) until the watcher's next poll brings it back."""
        self.loop.report(exc, f"{what} failed")
        self._crashed(exc)

    def _crashed(self, exc: BaseException) -> None:
        """The loop's error handler for this node's callbacks."""
        self._down(f"internal error in the I/O thread ({_reason(exc)})")

    def close(self) -> None:
        """Leave for good: the watcher closes the Client if this node opened it (waited for, bounded)."""
        self.closed = True
        self._up = False
        self._futures.clear()
        self._stop.set()
        if self.entry.owns_client and self._client is not None and self._watcher.is_alive():
            self._watcher.join(_CLOSE_TIMEOUT)  # its Client is closed before destroy() returns

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
            jobs.append((job_id, digest, args if type(args) is bytes else bytes(args), protocol))
        payload = pickle.dumps((tuple(bodies.values()), tuple(jobs)), 5)
        runner = _runner()
        client = self._client
        key = f"ppft-{_label(batch[0].body.name)}-{self._id}-{next(self._keys)}"
        try:
            future = client.submit(runner.boot, runner.key, runner.blob, payload, key=key, pure=False)
            client.loop.add_callback(self._track, client, key, future)
        except Exception as exc:  # noqa: BLE001 - the Client closed under us: the jobs run elsewhere
            self._down(f"the dask Client refused the jobs ({_reason(exc)})", also=batch)
            return False
        self._inflight[key] = batch
        self._futures[key] = future
        self._count += len(batch)
        return True

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
                reason = f"dask dropped the task ({_reason(outcome)})"
                log.warning(
                    "dask cluster %s: %s of %d job(s); they run again",
                    self.name,
                    printable(reason, 1000),
                    len(batch),
                )
                self._on_lost(batch, reason)
            else:  # the Client lost its scheduler and cancelled every task: all go back at once
                self._down(_lost(status), also=batch)
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
            f"every dask worker of {self.name} that ran job {task.wire.job_id} died ({_reason(exc)}); dask "
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

    # -- the watcher thread ----------------------------------------------------------------------------

    def _post(self, fn: Callable[..., None], *args: Any, **kwargs: Any) -> None:
        self.loop.call_soon_threadsafe(functools.partial(fn, *args, **kwargs), self._crashed)

    def _watch(self) -> None:
        """Open the Client, then follow the cluster's size and the Client's state until the node closes."""
        client: Any = None
        backoff = 0.5
        posted: tuple[Any, ...] = ()
        while not self._stop.is_set():
            if client is None:
                try:
                    client = self._open()
                except Exception as exc:  # noqa: BLE001 - any failure to connect is reported, then retried
                    self._post(self._down, _reason(exc))
                    posted = ()
                    self._stop.wait(backoff)
                    backoff = min(_MAX_BACKOFF, backoff * 2)
                    continue
            state = self._poll(client)
            if state[0] == "closed":
                final = not self.entry.owns_client  # the user's Client: gone for good
                if final:
                    reason = "the dask Client given in ppservers was closed; this node takes no more jobs"
                else:
                    reason = "the dask scheduler went away and could not be reached again"
                self._post(self._down, reason, final=final)
                if final:
                    return
                self._close_client(client)
                client = None
                posted = ()
                continue
            if state != posted or (state[0] == "running" and not self._up):  # the I/O thread saw a loss
                posted = state
                if state[0] == "running":
                    backoff = 0.5
                    self._post(self._running, client, state[1], state[2])
                else:
                    self._post(self._down, state[1])
            self._stop.wait(_POLL_INTERVAL)
        if client is not None and self.entry.owns_client:
            self._close_client(client)

    def _open(self) -> Any:
        import distributed  # noqa: PLC0415 - only where a dask node is used, off the caller's thread

        target = self.entry.target
        if not self.entry.owns_client:
            return target
        if isinstance(target, str):
            probe(target)  # a refused or unroutable address is named at once, not after dask's timeout
        client_type: Any = distributed.Client
        client = client_type(target, timeout=CONNECT_TIMEOUT, set_as_default=False)
        if self._stop.is_set():  # closed while connecting
            self._close_client(client)
            raise PPFTError("the node was closed while its Client connected")
        return client

    def _poll(self, client: Any) -> tuple[Any, ...]:
        """("running", threads, adaptive), ("down", reason) or ("closed",)."""
        status = str(client.status)
        if status in ("closed", "closing"):
            return ("closed",)
        if status != "running":
            return ("down", _lost(status))
        try:
            threads = sum(client.nthreads(callback_timeout=CONNECT_TIMEOUT).values())
        except Exception as exc:  # noqa: BLE001 - the scheduler did not answer: the node is down for now
            return ("down", f"the dask scheduler does not answer ({_reason(exc)})")
        cluster = getattr(client, "cluster", None)
        adaptive = getattr(cluster, "_adaptive", None)  # how dask itself tells an adaptive cluster
        return ("running", int(threads), bool(adaptive is not None and adaptive.periodic_callback))

    def _close_client(self, client: Any) -> None:
        try:
            client.close(timeout=_CLOSE_TIMEOUT)
        except Exception as exc:  # noqa: BLE001 - closing at exit may meet dask half torn down
            log.debug(
                "closing the dask Client of %s: %s: %s", self.name, type(exc).__name__, printable(exc, 1000)
            )


# -- helpers ---------------------------------------------------------------------------------------------


def _lost(status: str) -> str:
    return f"the connection to the dask scheduler was lost (the Client is {status})"


def _label(name: str) -> str:
    """The function's name as dask's dashboard groups tasks by it (ppft-<name>-...)."""
    return re.sub(r"[^A-Za-z0-9_.]", "_", name.rsplit(".", 1)[-1])[:40] or "job"


def _reason(exc: BaseException) -> str:
    try:
        text = str(exc)
    except Exception as str_exc:  # noqa: BLE001 - a broken __str__ must not hide the failure itself
        text = f"<str() failed: {str_exc!r}>"
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


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
