"""`WorkerPool`: local worker processes, fed batches of jobs by the thread that runs their `Loop`.

    owner's queue (deque of tasks) --dispatch()--> per-worker window --JobBatch frames--> worker process
    worker process --ResultBatch frames--> on_results([(task, result), ...]) --> owner completes its futures
    worker death (EOF on its pipe) --> in-flight tasks back to the owner's queue front (on_requeue), or
                                       failed with WorkerLostError after `max_attempts`; a new worker starts

The pool does no I/O of its own thread: the owner (the client's scheduler, or ppserver) runs the `Loop`, and
the pool registers its pipes there. It never blocks on a worker: writes that do not fit in a pipe wait in a
per-worker buffer until the pipe drains.

Batching and windows: each worker gets frames of up to `batch` jobs with two frames in flight, where `batch`
follows the measured job time (`runtime.batching`: a target of work per frame, at most 256 jobs,
`scripts/bench --only tiny`); long jobs go one at a time with no prefetch, so a slow job never holds a queue
of others hostage. Until the first result arrives a worker gets one job: nothing is known of the jobs' length.
When a worker idles next to a frame that has sent no result for `stealing.STEAL_AFTER`, the tail half of that
frame is cancelled and queued again for it (`stealing`): run times learnt from the past can mislead the
batching.

The pool's worker processes over their lives (started by fork or exec, retired, lost, reaped, replaced,
and the fate of a dead worker's jobs: rerun, or `WorkerLostError` after `max_attempts`) are `lives.py`'s,
which `WorkerPool` builds on; `start_methods()` tells how each worker was started.

Output: every worker gets an output region (shared memory) where it mirrors what its job writes; the pool
reads it when the worker dies, so the job's `WorkerLostError` result carries the text it wrote, and, while
the owner watches (`watch_output`), every `output.LIVE_INTERVAL` for live output (`output`).

Bugs: a callback of a worker (its pipes, a dispatch to it, the handling of its results) that raises kills
that worker and requeues its jobs as for a death, so nothing is lost and the loop goes on.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import time
from collections.abc import Callable

from ppft_protocol import (
    Bye,
    Cancel,
    Closed,
    Connection,
    Established,
    NodeInfo,
    ProtocolError,
    Result,
    ResultBatch,
    Role,
    next_read_size,
    printable,
)
from ppft_protocol.relay import RawResults

from ..process import close_region
from ..runtime import (
    Batching,
    Loop,
    OutBuffer,
    Task,
    TaskQueue,
    adopt,
    collect_raw_results,
    collect_results,
    format_bytes,
    send_batch,
    take_batch,
)
from .limits import Deadlines, MemoryWatch, job_limit, memory_result, pool_timeout_result
from .lives import WorkerLives
from .output import LiveWatch, OutputPiece, open_region
from .shared import shared_segments
from .spawn import FORKSERVER, start_worker
from .stealing import Stealer, reclaim
from .worker import PoolWorker

__all__ = ["WorkerPool"]

log = logging.getLogger("ppft.pool")

_IOV_MAX = 512  # parts per writev call, well under every system's IOV_MAX


class WorkerPool(WorkerLives):
    """N local worker processes, driven from `loop`'s thread. All methods are for that thread only."""

    def __init__(
        self,
        loop: Loop,
        size: int,
        *,
        on_results: Callable[[list[tuple[Task, Result]]], None],
        on_requeue: Callable[[list[Task]], None],
        restart: bool = False,
        max_attempts: int = 3,
        fork_threads: int | None = None,
        on_raw_results: Callable[[RawResults, list[Task | None]], None] | None = None,
        memory_limit: int | None = None,
        max_jobs_per_worker: int | None = None,
        segments: bool = False,
    ) -> None:
        """`fork_threads`: fork the workers `start` launches if the process then has exactly this many
        threads (its owner knows which they are and that none holds a lock the child needs); None: always
        exec. The environment variable PPFT_START=exec forces exec.

        `on_raw_results`: an owner that only passes results on (ppserver) gets each result frame undecoded,
        with its tasks (`collect_raw_results`), instead of (task, result) pairs through `on_results`, which
        then carries only the results the pool makes itself (a job that failed with its worker).

        `memory_limit`: bytes of resident memory a worker may hold (`limits.MemoryWatch`); None: no limit.
        `max_jobs_per_worker`: a worker is replaced after running this many jobs (its replacement starts
        when its last job is sent, while it finishes them); None: never. `segments`: large buffers go
        through shared segments, not the pipes (`shared`), also for an owner that passes them on."""
        super().__init__(
            loop, size, on_results=on_results, on_requeue=on_requeue, restart=restart,
            max_attempts=max_attempts, fork_threads=fork_threads,
        )  # fmt: skip
        self.jobs_done = 0
        self.job_time = 0.0
        self.name = "local"
        self.ids_known = True  # jobs are named by their ids (a dial-in worker's pool does not know them)
        self._on_raw_results = on_raw_results
        self._secret = os.urandom(32)
        self._next_index = 0
        self._batching = Batching(one_at_a_time=restart)
        self._stealer = None if restart else Stealer(loop, self._workers, self._cancel)
        self._live: LiveWatch | None = None
        self._deadlines = Deadlines(loop, self._workers, self._expired)
        self.max_jobs_per_worker = max_jobs_per_worker
        self._memory = (
            None if memory_limit is None else MemoryWatch(loop, self._workers, memory_limit, self._over)
        )
        self.shared = shared_segments(segments, self._cancel, relay=on_raw_results is not None)
        if memory_limit is not None or max_jobs_per_worker is not None:
            self._want_forkserver()

    # -- the owner's interface -------------------------------------------------------------------------

    def start(self) -> None:
        """Start the workers, all at once, forked if `fork_threads` says that is safe (their interpreters
        boot in parallel if they are exec'd)."""
        self._fill(first=True)
        if self._forkserver is not None:
            self._forkserver.start()  # in the background: ready long before the first replacement

    @property
    def inflight(self) -> int:
        return sum(len(w.inflight) for w in self._workers) + sum(len(w.inflight) for w in self._exiting)

    def take_inflight(self) -> list[Task]:
        """Every task in flight, removed from the workers' books (before `close`, to fail or requeue them)."""
        tasks: list[Task] = []
        for w in self._workers + self._exiting:
            tasks.extend(w.inflight.values())
            w.inflight.clear()
            w.stolen.clear()
        return tasks

    def watch_output(self, on_output: Callable[[list[OutputPiece]], None] | None) -> None:
        """Hand what running jobs write to `on_output`, whole lines as they are written, as
        `(task, stream, offset, text)` (stream 1 stdout, 2 stderr; offset in bytes of the job's output);
        None stops it. A job's result still carries all of its output."""
        if self._live is not None:
            self._live.close()
            self._live = None
        if on_output is not None:
            self._live = LiveWatch(self.loop, self._workers, on_output)

    def dispatch(self, queue: TaskQueue) -> int:
        """Move tasks from the head of `queue` into free worker windows; returns how many were sent."""
        sent = 0
        batching = self._batching
        for w in self._workers:
            if not queue:
                break
            if not w.ready or w.retiring or w.solo_busy or (w.standby is not None and w.standby.rfd >= 0):
                continue  # (standby: a recycled worker's replacement, waiting for it to leave)
            inflight = w.inflight
            head = queue[0]
            if head.solo:  # it was running when a worker died: it runs alone, on an idle worker
                if not inflight:
                    task = queue.popleft()
                    if task.claim():
                        w.solo_busy = True
                        self._send(w, [task])
                        sent += 1
                        limit = job_limit(task)
                        if limit is not None:  # a job with a time limit runs alone: it starts now
                            self._deadlines.started(w, task, limit)
                continue
            batch_size, window = batching.limits(head.body.digest)
            free = window - len(inflight)
            if self.max_jobs_per_worker is not None:  # recycling: never more than its share of jobs
                left = self.max_jobs_per_worker - w.sent
                free = min(free, left)
                batch_size = min(batch_size, left)  # its last jobs go at once, not after the others finish
            if free <= 0 or (inflight and free < batch_size):
                continue
            batch = take_batch(queue, min(free, batch_size), batching)
            if batch:
                try:
                    self._send(w, batch)
                except Exception as exc:  # noqa: BLE001 - a bug here costs this worker, never the loop
                    adopt(w.inflight, batch)
                    self.loop.report(exc, f"dispatching jobs to {w!r} failed")
                    self._worker_failed(w, exc)
                    continue
                sent += len(batch)
        return sent

    def abandon(self, unwanted: Callable[[Task], bool]) -> list[Task]:
        """Stop working on the jobs in flight nobody wants any more (`unwanted(task)`: their client left).

        A worker running one of them is killed and replaced, as if it had died, so it is free at once: its
        other jobs (other clients' jobs batched behind it) go back to the owner's queue, no attempt charged.
        Unwanted jobs queued behind another client's running job are cancelled instead (the worker answers
        them as cancelled, and the owner drops those results). Returns the unwanted jobs of the killed
        workers, which will have no result."""
        dropped: list[Task] = []
        for w in list(self._workers):
            inflight = w.inflight
            if not inflight or not any(map(unwanted, inflight.values())):
                continue
            if not unwanted(next(iter(inflight.values()))):  # running another client's job: cancel the rest
                self._cancel(w, tuple(job_id for job_id, task in inflight.items() if unwanted(task)))
                continue
            tasks = list(inflight.values())
            inflight.clear()
            w.stolen.clear()
            self._unregister(w)
            self._workers.remove(w)
            with contextlib.suppress(ProcessLookupError):
                w.proc.kill()
            self._dying.append(w.proc)
            log.info("%r stopped: its client left while it ran that client's job; starting a replacement", w)
            self._died(f"{w!r} was stopped: its client left while it ran that client's job")
            kept = [task for task in tasks if not unwanted(task)]
            dropped += [task for task in tasks if unwanted(task)]
            if kept:
                self._on_requeue(kept)
        if dropped:
            self._schedule_reap()
            self._fill()
        return dropped

    def holding(self, wanted: Callable[[Task], bool]) -> list[Task]:
        """The tasks in flight on the workers for which `wanted(task)` holds."""
        return [task for w in self._workers for task in w.inflight.values() if wanted(task)]

    def terminate(self, task: Task) -> bool:
        """Stop `task` if a worker has it: the worker running it is killed and replaced (the jobs behind it
        go back to the owner's queue, charged nothing); a worker holding it queued behind another job is
        told to drop it. The task gets no result from the pool. False if no worker has it."""
        job_id = task.wire[0]
        for w in self._workers:
            if w.inflight.get(job_id) is task:
                break
        else:
            return False
        if next(iter(w.inflight)) != job_id:
            del w.inflight[job_id]
            self._cancel(w, (job_id,))  # its answer (cancelled) finds it off the books, and is dropped
            return True
        self._want_forkserver()
        others = self._stop_worker(w, f"its job {job_id} was terminated")[1:]
        if others:
            self._on_requeue(others)
        return True

    def _expired(self, w: PoolWorker, task: Task, limit: float) -> None:
        """`task` ran past its `limit` on `w`: kill `w` (its replacement starts), fail the task with
        `JobTimeoutError`, and send the jobs behind it back to the owner's queue, charged nothing."""
        self._want_forkserver()
        tasks = self._stop_worker(w, f"its job {task.wire[0]} ran past its timeout of {limit:g} s")
        others = [t for t in tasks if t is not task]
        if others:
            self._on_requeue(others)
        self._on_results([(task, pool_timeout_result(w, task, limit, self.name, self.ids_known))])

    def _over(self, w: PoolWorker, rss: int) -> None:
        """`w`'s resident memory passed the limit: kill it (its replacement starts); the job it was running
        fails with `WorkerLostError` saying so, the jobs behind it go back to the owner's queue."""
        assert self._memory is not None
        limit = self._memory.limit
        figures = f"{format_bytes(rss)}, passed the worker memory limit of {format_bytes(limit)}"
        tasks = self._stop_worker(w, f"its resident memory, {figures}")
        if tasks:
            if len(tasks) > 1:
                self._on_requeue(tasks[1:])
            self._on_results([(tasks[0], memory_result(w, tasks[0], rss, limit, self.ids_known))])

    def close(self, grace: float = 1.0) -> None:
        """Stop every worker now (running jobs are abandoned) and reap them; leaves no process behind."""
        self._deadlines.close()
        if self._memory is not None:
            self._memory.close()
        if self._stealer is not None:
            self._stealer.close()
        if self._live is not None:
            self._live.close()
        super().close(grace)

    # -- starting a worker ------------------------------------------------------------------------------

    def _spawn(self, why_exec: str) -> None:
        """Start one worker: forked if `why_exec` is empty, else exec'd."""
        region = open_region()
        try:
            segments = self.shared is not None
            proc, rfd, wfd, why_exec = start_worker(
                self._secret, why_exec, region, self._replacer(), segments
            )
        except BaseException:
            if region is not None:
                close_region(region[1])
            raise
        finally:
            if region is not None:
                os.close(region[0])  # the worker has it now (inherited, or passed on by exec)
        conn = Connection(
            Role.CLIENT, self._secret, allow_plain=True, raw_results=self._on_raw_results is not None
        )
        method = "forkserver" if why_exec == FORKSERVER else "exec" if why_exec else "fork"
        w = PoolWorker(self._next_index, proc, rfd, wfd, conn, method, region and region[1])
        self._next_index += 1
        self._workers.append(w)
        self.loop.add_reader(w.rfd, lambda: self._readable(w), lambda exc: self._worker_failed(w, exc))
        self._write(w, conn.data_to_send_parts())
        if why_exec == FORKSERVER:
            log.debug("started %r: %s", w, why_exec)
        elif why_exec:
            log.debug("started %r by exec: %s", w, why_exec)
        else:
            log.debug("started %r by fork: the process has exactly %s thread(s)", w, self.fork_threads)

    # -- bytes in and out ------------------------------------------------------------------------------

    def _write(self, w: PoolWorker, parts: list[bytes | memoryview]) -> None:
        """Write what the pipe takes now, large payloads uncopied (`writev`); the rest waits in `w.out`."""
        if not parts:
            return
        out = w.out
        if out.size:
            out.extend(parts)
            return
        try:
            n = os.write(w.wfd, parts[0]) if len(parts) == 1 else os.writev(w.wfd, parts[:_IOV_MAX])
        except BlockingIOError:
            n = 0
        except OSError as exc:
            if exc.errno in (errno.EPIPE, errno.EBADF):
                return  # the worker is gone; its EOF arrives on the read side
            raise
        out.extend(parts, n)
        if out.size:
            self.loop.add_writer(w.wfd, lambda: self._writable(w), lambda exc: self._worker_failed(w, exc))

    def _writable(self, w: PoolWorker) -> None:
        try:
            w.out.write_to(w.wfd)
        except BlockingIOError:
            return
        except OSError:
            w.out = OutBuffer()  # broken pipe: the read side reports the death
        if not w.out.size:
            self.loop.remove_writer(w.wfd)

    def _readable(self, w: PoolWorker) -> None:
        conn = w.conn
        view = conn.receive_buffer()  # the rest of a large frame: read in place, not copied
        while True:
            try:
                if view is None:
                    size = w.read_size
                    data = os.read(w.rfd, size)
                    n = len(data)
                    w.read_size = next_read_size(size, n)
                else:
                    n = os.readv(w.rfd, [view])
            except BlockingIOError:
                break
            except OSError as exc:
                self._lost(w, f"broke its pipe ({exc})")
                return
            finally:
                if view is not None:
                    view.release()
            if not n:
                self._lost(w)
                return
            try:
                events = conn.receive_data(data) if view is None else conn.receive_into(n)
            except ProtocolError as exc:
                log.error("%r spoke garbage: %s; killing it", w, printable(exc, 1000))
                w.proc.kill()
                self._lost(w, f"broke the protocol ({exc}) and was killed")
                return
            for event in events:
                if isinstance(event, ResultBatch):
                    self._results(w, event)
                elif isinstance(event, RawResults):
                    self._raw_results(w, event)
                elif isinstance(event, NodeInfo):
                    w.ready = True
                    self._start_failures = 0
                    self.broken_reason = ""
                    if self._stealer is not None:
                        self._stealer.joined()
                elif isinstance(event, (Established, Closed, Bye)):
                    pass
            if w.rfd < 0:
                return  # retired or lost while handling the results
            # A large frame has begun: read on into its buffer now rather than a loop round later.
            view = conn.receive_buffer()
            if view is None:
                break
        self._write(w, w.conn.data_to_send_parts())

    def _send(self, w: PoolWorker, tasks: list[Task]) -> None:
        if not w.inflight:
            w.since = time.monotonic()
        self._refs_out(w)  # put() refs, before the jobs
        shared = self.shared
        send_batch(w.conn, w.bodies, w.inflight, tasks, None if shared is None else shared.local_args)
        self._write(w, w.conn.data_to_send_parts())
        if self.max_jobs_per_worker is not None:
            w.sent += len(tasks)
            self._recycle(w, self.max_jobs_per_worker)
        if self._live is not None:
            self._live.busy()
        if self._stealer is not None:
            self._stealer.sent(w)

    def _cancel(self, w: PoolWorker, job_ids: tuple[int, ...]) -> None:
        w.conn.send(Cancel(job_ids))
        self._write(w, w.conn.data_to_send_parts())

    def _results(self, w: PoolWorker, batch: ResultBatch) -> None:
        if self.shared is not None:
            batch = self.shared.map_results(w, batch)
        back = reclaim(w, batch.results) if w.stolen else None  # a steal's cancelled jobs: queued again
        done, total = collect_results(batch, w.inflight.pop, self._batching)
        if back:
            self._on_requeue(back)
        if done or back:
            self._finished(w, len(done), total)
        if done:
            if self.shared is not None and self.shared.args_mapped:  # (one attribute looked at per frame)
                self.shared.done([task for task, _ in done])
            try:
                self._on_results(done)
            except BaseException:
                self._give_back(w, [task for task, _ in done])
                raise

    def _raw_results(self, w: PoolWorker, batch: RawResults) -> None:
        shared = self.shared
        if shared is not None and shared.holds_mapped(batch):  # a value in w's segment: mapped, passed on
            self._results(w, ResultBatch(batch.results()))  # as a buffered pickle (`shared.map_results`)
            return
        back = reclaim(w, batch.results()) if w.stolen and not w.stolen.isdisjoint(batch.job_ids) else None
        tasks, done, total = collect_raw_results(batch, w.inflight.pop, self._batching)
        if back:
            self._on_requeue(back)
        if done or back:
            self._finished(w, done, total)
        if done:
            if shared is not None and shared.args_mapped:
                shared.done(tasks)
            assert self._on_raw_results is not None  # the worker's connection delivers raw results only then
            try:
                self._on_raw_results(batch, tasks)
            except BaseException:
                self._give_back(w, [task for task in tasks if task is not None])
                raise

    def _give_back(self, w: PoolWorker, tasks: list[Task]) -> None:
        """Results of `tasks` could not be handed over (a bug): the tasks run again rather than be lost (an
        owner ignores a second result of a job that finished): back on `w`'s books, which its error handler
        empties, or straight back to the owner if `w` is retired already."""
        if w in self._workers:
            adopt(w.inflight, tasks)
        else:
            self._on_requeue(tasks)

    def _finished(self, w: PoolWorker, done: int, total: float) -> None:
        """`done` of `w`'s jobs finished, taking `total` seconds."""
        w.solo_busy = False
        w.since = time.monotonic()
        w.done += done
        self.jobs_done += done
        self.job_time += total
        if not w.inflight:
            if w.retiring or self.restart:
                self._retire(w)
                self._fill()
            elif self._stealer is not None:
                self._stealer.emptied()
