"""`WorkerPool`: local worker processes, fed batches of jobs by the thread that runs their `Loop`.

    owner's queue (deque of tasks) --dispatch()--> per-worker window --JobBatch frames--> worker process
    worker process --ResultBatch frames--> on_results([(task, result), ...]) --> owner completes its futures
    worker death (EOF on its pipe) --> in-flight tasks back to the owner's queue front (on_requeue), or
                                       failed with WorkerLostError after `max_attempts`; a new worker starts

The pool does no I/O of its own thread: the owner (the client's scheduler, or ppserver) runs the `Loop`, and
the pool registers its pipes there. It never blocks on a worker: writes that do not fit in a pipe wait in a
per-worker buffer until the pipe drains.

Batching and windows: each worker gets frames of up to `batch` jobs with two frames in flight, where `batch`
follows the measured job time (about 2 ms of work per frame, at most 256 jobs); long jobs (5 ms and more) go
one at a time with no prefetch, so a slow job never holds a queue of others hostage. Until the first result
arrives a worker gets one job, since nothing is known yet about the jobs' length.
When a worker idles next to a frame that has sent no result for 20 ms, the tail half of that frame is
cancelled and queued again for it (`stealing`): run times learnt from the past can mislead the batching.

Start: the workers that `start` launches are forked (`forkstart`) when the owner passed `fork_threads` and the
process has exactly that many threads at that moment; every other worker (a replacement, growth, all of them
with `restart=True`) is exec'd (`spawn`). `start_methods()` tells which each worker got.

Deaths: a worker's jobs are run in the order they were sent, so the first unfinished one is the suspect. When
a worker dies with several jobs in flight, every one of them is requeued and the suspect is marked `solo`: it
will run alone next time. A job is charged an attempt only when its worker dies while it runs alone, so one
bad job cannot fail the others of its batch, and it fails with `WorkerLostError` after `max_attempts`.

Output: every worker gets an output region (shared memory) where it mirrors what its job writes; the pool
reads it when the worker dies, so the job's `WorkerLostError` result carries the text it wrote, and, while
the owner watches (`watch_output`), every few milliseconds for live output (`poolout`).
A worker whose pipe ends is given a second to exit, polled on a timer (the loop never waits for a process);
then it is killed.

Bugs: a callback of a worker (its pipes, a dispatch to it, the handling of its results) that raises kills
that worker and requeues its jobs as for a death, so nothing is lost and the loop goes on; a failing
timer of the pool's own is re-armed.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import subprocess
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
    printable,
)
from ppft_protocol.relay import RawResults

from .batching import Batching
from .forkstart import WorkerProcess, prepare_fork, why_not_fork
from .loop import Loop, Timer
from .outbuf import OutBuffer
from .outregion import close_region
from .poolout import LiveWatch, OutputPiece, keep_output, lost_result, open_region
from .poolworker import PoolWorker
from .reads import next_read_size
from .spawn import describe_exit, start_worker
from .stealing import Stealer, reclaim
from .stream import internal_error_reason
from .tasks import Task, TaskQueue, adopt, collect_raw_results, collect_results, send_batch, take_batch

__all__ = ["WorkerPool"]

log = logging.getLogger("ppft.pool")

_IOV_MAX = 512  # parts per writev call, well under every system's IOV_MAX
EXIT_GRACE = 1.0
"""Seconds a worker whose pipe ended has to exit by itself before it is killed."""


class WorkerPool:
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
    ) -> None:
        """`fork_threads`: fork the workers `start` launches if the process then has exactly this many
        threads (its owner knows which they are and that none holds a lock the child needs); None: always
        exec. The environment variable PPFT_START=exec forces exec.

        `on_raw_results`: an owner that only passes results on (ppserver) gets each result frame undecoded,
        with its tasks (`collect_raw_results`), instead of (task, result) pairs through `on_results`, which
        then carries only the results the pool makes itself (a job that failed with its worker)."""
        self.loop = loop
        self.size = size
        self.restart = restart
        self.max_attempts = max_attempts
        self.fork_threads = fork_threads  # the owner may set it to None before `start` runs
        self.jobs_done = 0
        self.job_time = 0.0
        self.broken_reason = ""  # set while workers keep failing to start
        self.name = "local"
        self.restarts = 0  # workers replaced after they died or were killed (the status page counts them)
        self.on_death: Callable[[str], None] | None = None  # told "worker 3 (pid 12) was killed by ..."
        self._on_results = on_results
        self._on_raw_results = on_raw_results
        self._on_requeue = on_requeue
        self._secret = os.urandom(32)
        self._workers: list[PoolWorker] = []
        self._exiting: list[PoolWorker] = []  # pipe ended, exit status not known yet: their jobs wait here
        self._dying: list[WorkerProcess] = []
        self._next_index = 0
        self._batching = Batching(one_at_a_time=restart)
        self._start_failures = 0
        self._respawn_timer: Timer | None = None
        self._reap_timer: Timer | None = None
        self._stealer = None if restart else Stealer(loop, self._workers, self._cancel)
        self._live: LiveWatch | None = None
        self._closed = False

    # -- the owner's interface -------------------------------------------------------------------------

    def start(self) -> None:
        """Start the workers, all at once, forked if `fork_threads` says that is safe (their interpreters
        boot in parallel if they are exec'd)."""
        self._fill(first=True)

    @property
    def workers(self) -> int:
        """Workers alive and not retiring (started or still starting)."""
        return sum(1 for w in self._workers if not w.retiring)

    def worker_records(self) -> list[PoolWorker]:
        """The records of the live workers (a copy of the list: for readers on other threads, which must
        only read them: `observe.poolview`)."""
        return list(self._workers)

    @property
    def pids(self) -> list[int]:
        return [w.pid for w in self._workers]

    def why_exec(self) -> str:
        """Why `start` would exec a worker now rather than fork it; "" if it would fork."""
        if self.restart:
            return "restart=True: every worker is a fresh exec'd process"
        return why_not_fork(self.fork_threads)

    def start_methods(self) -> dict[int, str]:
        """How each live worker was started, by pid: "fork" or "exec"."""
        return {w.pid: w.method for w in self._workers}

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

    def resize(self, size: int) -> None:
        """Grow at once; shrink by retiring idle workers first, busy ones when their jobs are done."""
        if size < 0:
            raise ValueError("size must be >= 0")
        self.size = size
        live = [w for w in self._workers if not w.retiring]
        excess = len(live) - size
        if excess > 0:
            for w in sorted(live, key=lambda w: len(w.inflight))[:excess]:
                w.retiring = True
                if not w.inflight:
                    self._retire(w)
        else:
            self._fill()

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
            if not w.ready or w.retiring or w.solo_busy:
                continue
            inflight = w.inflight
            head = queue[0]
            if head.solo:  # it was running when a worker died: it runs alone, on an idle worker
                if not inflight:
                    task = queue.popleft()
                    if task.claim():
                        w.solo_busy = True
                        self._send(w, [task])
                        sent += 1
                continue
            batch_size, window = batching.limits(head.body.digest)
            free = window - len(inflight)
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

    def close(self, grace: float = 1.0) -> None:
        """Stop every worker now (running jobs are abandoned) and reap them; leaves no process behind."""
        self._closed = True
        if self._stealer is not None:
            self._stealer.close()
        if self._live is not None:
            self._live.close()
        for timer in (self._respawn_timer, self._reap_timer):
            if timer is not None:
                timer.cancel()
        procs = []
        for w in self._workers:
            self._unregister(w)
            procs.append(w.proc)
            close_region(w.region)
            w.region = None
        self._workers.clear()
        procs.extend(w.proc for w in self._exiting)
        self._exiting.clear()
        procs.extend(self._dying)
        self._dying.clear()
        for proc in procs:
            with contextlib.suppress(ProcessLookupError):
                proc.terminate()
        deadline = time.monotonic() + grace
        for proc in procs:
            try:
                proc.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                proc.wait()

    # -- workers coming and going ----------------------------------------------------------------------

    def _fill(self, first: bool = False) -> None:
        if self._closed:
            return
        while self.workers < self.size:
            why_exec = self.why_exec() if first else "only the workers a pool starts with are forked"
            if not why_exec:
                prepare_fork()
            try:
                self._spawn(why_exec)
            except OSError as exc:
                self._start_failed(f"could not start a worker process: {exc}")
                return

    def _spawn(self, why_exec: str) -> None:
        """Start one worker: forked if `why_exec` is empty, else exec'd."""
        region = open_region()
        try:
            proc, rfd, wfd, why_exec = start_worker(self._secret, why_exec, region)
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
        w = PoolWorker(
            self._next_index, proc, rfd, wfd, conn, "exec" if why_exec else "fork", region and region[1]
        )
        self._next_index += 1
        self._workers.append(w)
        self.loop.add_reader(w.rfd, lambda: self._readable(w), lambda exc: self._worker_failed(w, exc))
        self._write(w, conn.data_to_send_parts())
        if why_exec:
            log.debug("started %r by exec: %s", w, why_exec)
        else:
            log.debug("started %r by fork: the process has exactly %s thread(s)", w, self.fork_threads)

    def _retire(self, w: PoolWorker) -> None:
        """A worker we no longer need: close its pipes (it exits on EOF) and reap it later."""
        self._unregister(w)
        self._workers.remove(w)
        self._dying.append(w.proc)
        close_region(w.region)
        w.region = None
        self._schedule_reap()

    def _unregister(self, w: PoolWorker) -> None:
        self.loop.remove_reader(w.rfd)
        self.loop.remove_writer(w.wfd)
        for fd in (w.rfd, w.wfd):
            if fd >= 0:
                with contextlib.suppress(OSError):
                    os.close(fd)
        w.rfd = w.wfd = -1  # never closed twice: the number may belong to a new descriptor by then

    def _schedule_reap(self) -> None:
        if self._reap_timer is None and self._dying and not self._closed:
            self._reap_timer = self.loop.call_later(0.2, self._reap, self._timer_failed)

    def _reap(self) -> None:
        self._reap_timer = None
        self._dying = [p for p in self._dying if p.poll() is None]
        self._schedule_reap()

    def _lost(self, w: PoolWorker, detail: str = "") -> None:
        """`w`'s pipe ended: forget it now, and settle its jobs once its exit status is known."""
        if w not in self._workers:
            return
        self._unregister(w)
        self._workers.remove(w)
        self._exiting.append(w)
        self._exited(w, detail, time.monotonic() + EXIT_GRACE, 0.0005)

    def _exited(self, w: PoolWorker, detail: str, deadline: float, delay: float) -> None:
        """Poll `w`'s exit (a timer, never a wait: the loop must not block), killing it after the grace."""
        if w not in self._exiting:
            return  # the pool closed meanwhile
        code = w.proc.poll()
        if code is None and time.monotonic() < deadline:
            self.loop.call_later(
                delay, lambda: self._exited(w, detail, deadline, min(delay * 2, 0.05)),
                lambda exc: self._settle(w, internal_error_reason(exc)),
            )  # fmt: skip
            return
        if code is None:
            with contextlib.suppress(ProcessLookupError):
                w.proc.kill()
            self._dying.append(w.proc)  # reaped later, off the way of its jobs
            self._schedule_reap()
            how = detail or f"closed its pipe and did not exit within {EXIT_GRACE:.0f} s (killed)"
        else:
            how = detail or describe_exit(code)
        self._settle(w, how)

    def _settle(self, w: PoolWorker, how: str) -> None:
        """`w` is gone: its jobs run again (or fail, charged as `_requeue` says); a replacement starts."""
        if w not in self._exiting:
            return
        self._exiting.remove(w)
        tasks = list(w.inflight.values())
        w.inflight.clear()
        keep_output(w, tasks)  # the text its job wrote, before anything decides that job's fate
        if not w.ready:
            self._start_failed(f"{w!r} {how} before it was ready")
        else:
            self._start_failures = 0
            if tasks or not w.retiring:
                log.warning("%r %s with %d job(s) in flight; starting a replacement", w, how, len(tasks))
                self._died(f"{w!r} {how} with {len(tasks)} job(s) in flight")
        if tasks:
            self._requeue(w, how, tasks)
        if not self.broken_reason:
            self._fill()

    def _died(self, what: str) -> None:
        self.restarts += 1
        if self.on_death is not None:
            self.on_death(what)

    def _requeue(self, w: PoolWorker, how: str, tasks: list[Task]) -> None:
        first = tasks[0]
        failed: list[tuple[Task, Result]] = []
        if len(tasks) == 1:
            first.attempts += 1
            if first.attempts >= self.max_attempts:
                failed.append((first, lost_result(w, how, first)))
                tasks = []
        first.solo = True
        if tasks:
            self._on_requeue(tasks)
        if failed:
            self._on_results(failed)

    def _start_failed(self, reason: str) -> None:
        self._start_failures += 1
        if self._start_failures >= 3:
            if not self.broken_reason:
                log.error("local workers cannot start: %s", reason)
            self.broken_reason = f"local workers cannot start: {reason}"
        delay = min(5.0, 0.05 * 2**self._start_failures)
        if self._respawn_timer is None and not self._closed:
            self._respawn_timer = self.loop.call_later(delay, self._respawn, self._timer_failed)

    def _respawn(self) -> None:
        self._respawn_timer = None
        self._fill()

    # -- bugs ------------------------------------------------------------------------------------------

    def _worker_failed(self, w: PoolWorker, exc: BaseException) -> None:
        """A callback of `w` raised (the loop logged the traceback): kill `w`; its jobs go back as for a
        worker's death (so a job that breaks the pool every time fails after `max_attempts`), and a
        replacement starts. The loop goes on."""
        if w not in self._workers:
            return
        with contextlib.suppress(ProcessLookupError, OSError):
            w.proc.kill()
        self._unregister(w)
        self._workers.remove(w)
        self._dying.append(w.proc)
        self._schedule_reap()
        w.stolen.clear()
        self._exiting.append(w)
        self._settle(w, f"was killed after {internal_error_reason(exc)}")

    def start_failed(self, exc: BaseException) -> None:
        """`start` raised (an owner's error handler): try again later, as after a worker that failed to
        start."""
        self._start_failed(f"starting the workers failed: {internal_error_reason(exc)}")

    def _timer_failed(self, exc: BaseException) -> None:
        """A timer of the pool's own raised: re-arm its timers, so that reaping and respawning go on."""
        self._reap_timer = self._respawn_timer = None
        if self._closed:
            return
        self._schedule_reap()
        if self.workers < self.size:
            self._respawn_timer = self.loop.call_later(1.0, self._respawn, self._timer_failed)

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
        send_batch(w.conn, w.bodies, w.inflight, tasks)
        self._write(w, w.conn.data_to_send_parts())
        if self._live is not None:
            self._live.busy()
        if self._stealer is not None:
            self._stealer.sent(w)

    def _cancel(self, w: PoolWorker, job_ids: tuple[int, ...]) -> None:
        w.conn.send(Cancel(job_ids))
        self._write(w, w.conn.data_to_send_parts())

    def _results(self, w: PoolWorker, batch: ResultBatch) -> None:
        back = reclaim(w, batch.results) if w.stolen else None  # a steal's cancelled jobs: queued again
        done, total = collect_results(batch, w.inflight.pop, self._batching)
        if back:
            self._on_requeue(back)
        if done or back:
            self._finished(w, len(done), total)
        if done:
            try:
                self._on_results(done)
            except BaseException:
                self._give_back(w, [task for task, _ in done])
                raise

    def _raw_results(self, w: PoolWorker, batch: RawResults) -> None:
        back = reclaim(w, batch.results()) if w.stolen and not w.stolen.isdisjoint(batch.job_ids) else None
        tasks, done, total = collect_raw_results(batch, w.inflight.pop, self._batching)
        if back:
            self._on_requeue(back)
        if done or back:
            self._finished(w, done, total)
        if done:
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
