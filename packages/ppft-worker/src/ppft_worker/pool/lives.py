"""The lives of a pool's worker processes: started, retired, lost, reaped, replaced; a dead worker's jobs.

`WorkerLives` is the part of `WorkerPool` (pool.py) that keeps its worker processes over their lives:

* start: `_fill` starts workers up to `size`, the first ones forked when the owner vouches for the threads
  (`forkstart.why_not_fork`), every other one exec'd, or forked by the pool's fork server (`forkserver`)
  once the pool replaces workers (recycling, a memory limit, a job stopped for its time limit or by
  `terminate`; `_want_forkserver`) or its owner forks processes of its own through it (a ppserver's direct
  workers; `share_forkserver`), unless restart=True; three failures in a row mark the pool broken (the owner
  says so to its jobs) and it tries again later, backing off;
* recycling: a worker's replacement starts when it was sent the last tenth of its jobs, and stands by
  (`PoolWorker.standby`, skipped by the dispatch) until the worker it replaces has left (`_recycle`);
* end: a worker whose pipe ends is given `EXIT_GRACE` to exit, polled on a timer (the loop never waits for a
  process), then killed; its exit status names how it died (`spawn.describe_exit`). A retired worker (the
  pool shrank) just has its pipes closed, and is reaped later;
* its jobs: they are run in the order they were sent, so the first unfinished one is the suspect. When a
  worker dies with several jobs in flight, every one of them is requeued and the suspect is marked `solo`:
  it will run alone next time. A job is charged an attempt only when its worker dies while it runs alone,
  so one bad job cannot fail the others of its batch, and it fails with `WorkerLostError` after
  `max_attempts`, with the text it wrote (`output.keep_output`);
* bugs: a callback of a worker that raises kills that worker and settles its jobs as for a death; a failing
  timer of the pool's own is re-armed.

Everything here runs on the owner's I/O thread and never blocks. How bytes reach a worker and results come
back, and what the owner calls, is pool.py's: it provides `_spawn` (a worker started and registered on the
loop) and `_cancel`.
"""

from __future__ import annotations

import contextlib
import logging
import os
import subprocess
import time
from collections.abc import Callable

from ppft_protocol import Put, PutRefused, Release, Result

from ..process import FORKSERVER_DIRECT_ENV, SEGMENTS_ENV, close_region
from ..runtime import Loop, RefBook, Task, Timer, internal_error_reason
from .forkserver import ForkServer, forkserver_possible
from .forkstart import START_ENV, WorkerProcess, prepare_fork, why_not_fork
from .output import keep_output, lost_result
from .spawn import describe_exit, worker_env
from .worker import PoolWorker

__all__ = ["EXIT_GRACE", "WorkerLives"]

log = logging.getLogger("ppft.pool")

EXIT_GRACE = 1.0
"""Seconds a worker whose pipe ended has to exit by itself before it is killed."""


class WorkerLives:
    """A pool's worker processes, from start to reaping, driven from `loop`'s thread (see the module)."""

    def __init__(
        self,
        loop: Loop,
        size: int,
        *,
        on_results: Callable[[list[tuple[Task, Result]]], None],
        on_requeue: Callable[[list[Task]], None],
        restart: bool,
        max_attempts: int,
        fork_threads: int | None,
    ) -> None:
        self.loop = loop
        self.size = size
        self.restart = restart
        self.max_attempts = max_attempts
        self.fork_threads = fork_threads  # the owner may set it to None before `start` runs
        self.broken_reason = ""  # set while workers keep failing to start
        self.restarts = 0  # workers replaced after they died or were killed (the status page counts them)
        self.on_death: Callable[[str], None] | None = None  # told "worker 3 (pid 12) was killed by ..."
        self._on_results = on_results
        self._on_requeue = on_requeue
        self._workers: list[PoolWorker] = []
        self._exiting: list[PoolWorker] = []  # pipe ended, exit status not known yet: their jobs wait here
        self._dying: list[WorkerProcess] = []
        self._start_failures = 0
        self._respawn_timer: Timer | None = None
        self._reap_timer: Timer | None = None
        self._closed = False
        self._secret = b""  # the pool's
        self._forkserver: ForkServer | None = None  # replacements are forked by it (`forkserver`)
        self._forkserver_direct = False  # it forks the owner's direct workers too (`share_forkserver`)
        self.refs: RefBook | None = None  # the owner's `put()` refs: each worker is sent them (`sync_refs`)

    def _spawn(self, why_exec: str) -> None:
        """Start one worker (forked if `why_exec` is empty, else exec'd) and register it: pool.py's."""
        raise NotImplementedError

    def _cancel(self, w: PoolWorker, job_ids: tuple[int, ...]) -> None:
        """Tell `w` to drop these jobs if they have not started: pool.py's."""
        raise NotImplementedError

    def _write(self, w: PoolWorker, parts: list[bytes | memoryview]) -> None:
        """Write `parts` to `w`'s pipe, what does not fit now later: pool.py's."""
        raise NotImplementedError

    def sync_refs(self) -> None:
        """Send each ready worker the refs it lacks (and the releases) now, not with its next batch."""
        if self.refs is not None:
            for w in self._workers:
                if w.ready and self._refs_out(w):
                    self._write(w, w.conn.data_to_send_parts())

    def refs_from_upstream(self, event: Put | Release | PutRefused) -> PutRefused | None:
        """A ref message from this pool's owner's own peer (a dial-in worker's ppserver, an ssh node's
        client): held or dropped in `refs`, passed on to the workers now; the `PutRefused` to answer with."""
        assert self.refs is not None
        answer = self.refs.receive(event)
        self.sync_refs()
        return answer

    def _refs_out(self, w: PoolWorker) -> bool:
        """Queue on `w`'s connection the refs it lacks and the releases it missed; whether anything changed
        since it was last told (the caller writes what was queued)."""
        refs = self.refs
        if refs is None or w.refs.generation == refs.generation:
            return False
        refs.sync(w.conn, w.refs, True)
        return True

    # -- the owner's view of the workers ---------------------------------------------------------------

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

    @property
    def forkserver_pid(self) -> int | None:
        """The pid of the fork server that forks this pool's replacement workers (and its owner's direct
        workers), None while none runs."""
        return None if self._forkserver is None else self._forkserver.pid

    def why_exec(self) -> str:
        """Why `start` would exec a worker now rather than fork it; "" if it would fork."""
        if self.restart:
            return "restart=True: every worker is a fresh exec'd process"
        return why_not_fork(self.fork_threads)

    def start_methods(self) -> dict[int, str]:
        """How each live worker was started, by pid: "fork", "exec" or "forkserver" (a replacement forked by
        the fork server)."""
        return {w.pid: w.method for w in self._workers}

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

    def close(self, grace: float = 1.0) -> None:
        """Stop every worker now (running jobs are abandoned) and reap them; leaves no process behind."""
        try:
            self._close_workers(grace)
        finally:
            if self._forkserver is not None:
                self._forkserver.close(grace)  # after its workers: their exits come through it

    def _close_workers(self, grace: float) -> None:
        self._closed = True
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

    def _want_forkserver(self) -> None:
        """This pool replaces workers (recycling, a memory limit, a job stopped for its time limit or by
        `terminate`): have a fork server fork the replacements, unless every worker is to be a fresh exec'd
        process (restart=True, PPFT_START=exec) or the platform cannot (`forkserver_possible`)."""
        if self._forkserver is None and not self.restart and not self._closed and _forkserver_allowed():
            self._forkserver = ForkServer(self._forkserver_env)

    def share_forkserver(self) -> ForkServer | None:
        """The pool's fork server, for the owner's processes too (a ppserver's direct workers:
        `start_direct_worker`), made now if the pool has none, told to import what a direct worker needs, and
        started in the background; None where there can be none (PPFT_START=exec, `forkserver_possible`).
        The pool's own workers still go to it only as `_want_forkserver` says (not with restart=True)."""
        if self._closed or not _forkserver_allowed():
            return None
        if self._forkserver is None:
            self._forkserver = ForkServer(self._forkserver_env)
        self._forkserver_direct = True  # from its next start on (now, unless it runs already)
        self._forkserver.start()
        return self._forkserver

    def _replacer(self) -> ForkServer | None:
        """The fork server that forks the pool's own workers: none when each is to be exec'd afresh."""
        return None if self.restart else self._forkserver

    def _forkserver_env(self) -> dict[str, str]:
        """The fork server's environment: a worker's, whether its workers use shared segments, and whether
        it forks direct workers too."""
        env = worker_env(self._secret.hex())
        if getattr(self, "shared", None) is not None:  # WorkerPool's (`shared.shared_segments`)
            env[SEGMENTS_ENV] = "1"
        if self._forkserver_direct:
            env[FORKSERVER_DIRECT_ENV] = "1"
        return env

    def _recycle(self, w: PoolWorker, most: int) -> None:
        """Recycling: `w` was sent jobs. Its replacement starts when it is sent the last tenth of its
        `most` jobs, so it is ready by the time `w` leaves (no gap in throughput), and stands by (takes no
        job: the pool keeps its size) until `w` has left; once `w` was sent them all it gets no more, and
        leaves when their results are in (`_finished`)."""
        if not w.spare and w.sent >= most - most // 10:
            w.spare = True  # counted with the workers: `_fill` starts none for `w` when it retires
            log.debug("%r was sent %d of its %d jobs: starting its replacement", w, w.sent, most)
            try:
                self._spawn("a replacement of a recycled worker")
            except OSError as exc:
                self._start_failed(f"could not start a worker process: {exc}")
            else:
                self._workers[-1].standby = w
        if w.sent >= most and not w.retiring:
            w.retiring = True

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

    def _stop_worker(self, w: PoolWorker, why: str) -> list[Task]:
        """Kill `w` now and start its replacement: its jobs in flight are returned, in the order it runs
        them (the first one is the one it was running), off its books and charged nothing; the text its
        running job wrote is kept for that job (`keep_output`)."""
        tasks = list(w.inflight.values())
        w.inflight.clear()
        w.stolen.clear()
        w.deadline = None
        with contextlib.suppress(ProcessLookupError, OSError):
            w.proc.kill()
        self._unregister(w)
        self._workers.remove(w)
        self._dying.append(w.proc)
        keep_output(w, tasks[:1])
        log.info("%r stopped: %s; starting a replacement", w, why)
        self._schedule_reap()
        self._fill()
        return tasks

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


def _forkserver_allowed() -> bool:
    """Whether a pool may have a fork server here: the platform has one, and PPFT_START=exec is not set."""
    return os.environ.get(START_ENV, "").strip().lower() != "exec" and forkserver_possible()
