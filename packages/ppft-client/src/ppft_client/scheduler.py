"""The scheduler: one I/O thread that moves jobs from `submit` to the nodes and results back.

    submit() --append--> queue (deque) --wake--> I/O thread: Loop.on_idle = dispatch
        dispatch: each node, local pool first, takes what its windows allow from the queue head
    node --results--> I/O thread: complete futures (no callbacks) --> waiters wake up
                                   \\-> callback thread: classic callback, then done-callbacks
    node lost/worker died --> in-flight jobs back to the queue front (the pool decides retries)

Stages:

* `submit` (any thread) does the per-job work that must happen once: the function body (cached per function
  object), the pickled arguments and the `Job` future; then it appends to a deque and wakes the loop, which
  costs a syscall only when the loop is asleep. The one lock it takes (`_submit_lock`: the group counters
  for `wait` and the destroyed flag) is never taken by the I/O thread, so the two never wait for each
  other: under the GIL a thread that blocks on a lock loses a whole switch interval
  (`sys.getswitchinterval()`).
* The I/O thread (`ppft-io`) owns every pipe and socket through one `Loop`. After each round of events it
  dispatches: nodes pull jobs from the queue head into their windows, in batches, each batch claimed
  under one lock acquisition.
* Results complete their futures on the I/O thread, a whole result frame under one acquisition of the jobs'
  lock (`completion.complete_jobs`), waking only the threads that wait for one of them, and nothing of the
  user's runs there: values are unpickled by whoever asks for them. A job with a classic `callback`, or
  with done-callbacks, is handed to the callback thread (`ppft-callbacks`), so a slow callback never
  stalls dispatch. As in ppft 1.7, a job's classic callback has run before `wait()` returns for it.
* Jobs are finished and counted (`wait`, `unfinished`, the status) in one hold of `done_lock`, which the
  readers of those counts take: a thread that has seen a job finished finds it counted (`print_stats`
  after the results says "0 active tasks").
* A failing callback never ends the I/O thread: the `Loop` logs it and hands it to its owner, which closes
  what it belongs to (a worker, a ppserver link, a dask node) and gets its jobs run elsewhere; the dispatch
  guards each node the same way, and a result that cannot be handed over fails its own job only.
* Jobs no node can take wait, and `waiting.NodeWatch` says so every 30 s; when every node refused this
  client for good and there are no local workers, they fail with `NoNodeError` instead.
* If the I/O thread itself fails, every unfinished job fails with the reason: nothing waits forever.
* Jobs' output is printed by whoever asks for a job's value (or the callback thread), never by the I/O
  thread; what nobody asked for waits in `unshown` until `destroy`. With `live_output`, nodes hand on what
  running jobs write, which `LiveView` prints, prefixed, on a thread of its own (`output.live`).
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable, Iterable
from typing import Any

from ppft_protocol import PPFTError, Result
from ppft_worker.observe import Counters
from ppft_worker.pool import WorkerPool
from ppft_worker.runtime import Loop, Task, internal_error_reason

from .completion import CallbackThread, complete_each, complete_jobs, fail_job
from .errors import DestroyedServerError, NodeLostError, WorkerLostError
from .job import Job
from .joblock import JOBS_LOCK
from .limits import stop_job
from .nodes import Candidate, Node, RemoteNode, close_nodes
from .outcomes import count_finished
from .output import LiveView, Unshown, write_output
from .waiting import NodeWatch

__all__ = ["Scheduler"]

log = logging.getLogger("ppft.scheduler")

_SWEEP_MIN = 1024  # group counters kept before those of finished groups are forgotten

MAX_NODE_LOSSES = 3
"""A job lost with its node this many times fails with `NodeLostError` instead of being sent again."""


class Scheduler:
    """Queue, I/O thread and nodes behind one `Server`."""

    def __init__(
        self, ncpus: int, *, restart: bool = False, silence_timeout: float = 10.0, live_output: bool = False,
        memory_limit: int | None = None, max_jobs_per_worker: int | None = None,
    ) -> None:  # fmt: skip
        self.loop = Loop()
        self.silence_timeout = silence_timeout
        self.queue: deque[Task] = deque()
        self.exiting = False
        self.broken: BaseException | None = None
        # Counting for `wait`: submitters count what they queue under `_submit_lock`, which the I/O thread
        # never takes, and the finishing threads count what finished under `done_lock`, which `submit`
        # never takes. A lock shared by both sides made each wait for the other, and under the GIL a thread
        # that blocks on a lock waits a whole switch interval (`sys.getswitchinterval()`) to run again.
        self._submit_lock = threading.Lock()
        self._submitted: dict[str, int] = {}  # per group, while the group has jobs or was seen lately
        self._submitted_total = 0
        self.done_lock = threading.RLock()  # held while jobs are finished and counted, and to read the counts
        self._done = threading.Condition(self.done_lock)  # notified as jobs finish
        self._finished_counts: dict[str, int] = {}  # per group, likewise (`_forget_finished_groups`)
        self._finished_total = 0
        self._sweep_at = _SWEEP_MIN  # groups counted before those with nothing pending are forgotten
        self.counters = Counters()  # outcomes, jobs/s, durations, failures: `status`, the status page
        self.pool = WorkerPool(
            self.loop, ncpus, on_results=self._on_local_results, on_requeue=self._requeue, restart=restart,
            fork_threads=1, memory_limit=memory_limit, max_jobs_per_worker=max_jobs_per_worker,
            segments=True,
        )  # fmt: skip
        self.pool.on_death = lambda text: self.counters.failures.add("worker died", text)
        self.nodes: list[Node] = []  # besides the local pool: ppserver links, dask clusters
        self.discoveries: list[str] = []  # auto-discovery running on these ("*:35000"): more nodes may come
        self.watch = NodeWatch(self)
        self._callbacks = CallbackThread(self._finished, self.done_lock)
        self.unshown = Unshown()  # output of finished jobs nobody asked for yet: shown by `destroy`
        self.live = LiveView() if live_output else None
        if self.live is not None:
            self.pool.watch_output(self.live.pieces_from("local"))
        self.loop.on_idle = self._dispatch
        self._thread = threading.Thread(target=self._run, name="ppft-io", daemon=True)
        # PR_SET_PDEATHSIG ties a worker to the thread that started it. The main thread lasts as long as the
        # process, so when the caller is the main thread and the process's only thread, the workers start
        # here, before the I/O thread exists, and are forked: a single-threaded process is the one moment a
        # fork cannot inherit a lock some other thread holds (ppft_worker.pool.forkstart). Otherwise the
        # caller's thread may end before this server does: the I/O thread starts them, by exec.
        why_exec = self.pool.why_exec()
        if not why_exec and threading.current_thread() is not threading.main_thread():
            why_exec = "Server() is called from a thread other than the main one"
        if why_exec:
            self.pool.fork_threads = None
            log.debug("local workers start by exec, on the I/O thread: %s", why_exec)
            self.loop.call_soon_threadsafe(self.pool.start, self.pool.start_failed)
        else:
            try:
                self.pool.start()
            except BaseException:
                self.pool.close()
                self.loop.close()
                raise
        try:
            self._thread.start()
        except BaseException:  # no thread to be had: the workers started above must not stay
            self.pool.close()
            self.loop.close()
            raise

    # -- any thread ------------------------------------------------------------------------------------

    def submit(self, job: Job) -> None:
        queue = self.queue
        lock = self._submit_lock
        lock.acquire()  # by hand: a `with` statement costs twice as much
        try:
            if self.exiting:
                raise DestroyedServerError("Cannot submit jobs: server instance has been destroyed")
            if self.broken is not None:
                raise DestroyedServerError(f"Cannot submit jobs: the server is broken ({self.broken})")
            group = job.group
            submitted = self._submitted
            submitted[group] = submitted.get(group, 0) + 1
            self._submitted_total += 1
            queue.append(job)
            alone = len(queue) == 1
        finally:
            lock.release()
        if alone:
            # A queue that already held jobs is dispatched again whenever results free a window, so only
            # the first job of a burst needs to wake the I/O thread: 100,000 submits cost one wake-up, not
            # 100,000 GIL hand-offs. (Checked after the append: the I/O thread may have just taken the job
            # that was there before, and must not go to sleep on this one.) If the I/O thread is asleep,
            # this thread dispatches the job itself, under the loop's lock, and the I/O thread sleeps on:
            # a sequential round trip saves a thread switch. Whatever stays queued still wakes it.
            loop = self.loop
            if not loop.run_here(self._dispatch) or queue:
                loop.wake()

    def submit_many(self, jobs: list[Job]) -> None:
        """`submit` for each of `jobs`, under one acquisition of the lock and with one wake-up at most."""
        queue = self.queue
        with self._submit_lock:
            if self.exiting:
                raise DestroyedServerError("Cannot submit jobs: server instance has been destroyed")
            if self.broken is not None:
                raise DestroyedServerError(f"Cannot submit jobs: the server is broken ({self.broken})")
            submitted = self._submitted
            for job in jobs:
                group = job.group
                submitted[group] = submitted.get(group, 0) + 1
            self._submitted_total += len(jobs)
            queue.extend(jobs)
            alone = len(queue) <= len(jobs)
        if alone:
            self.loop.wake()

    def cancelled(self, job: Job) -> None:
        """A queued job was cancelled by its owner: it no longer counts for `wait`."""
        self._finished([job], cancelled=True)

    def terminated(self, job: Job) -> None:
        """A running job was terminated (`Job.terminate`): finished now; the I/O thread stops it."""
        self._finished([job], cancelled=True)  # counted as "cancelled" (status page, metrics)
        self.call(lambda: stop_job(self.pool, self.nodes, job, self._node_failed))

    def unfinished(self, group: str | None = None) -> int:
        # Under `done_lock`: a job whose result a thread has seen is counted. Finished first, then submitted:
        # both only grow, so equal counts mean nothing was pending at the moment `finished` was read. A
        # group's two counters are dropped together, under that lock, once equal.
        with self.done_lock:
            if group is None:
                return self._submitted_total - self._finished_total
            return self._submitted.get(group, 0) - self._finished_counts.get(group, 0)

    def wait(self, group: str | None = None, timeout: float | None = None) -> bool:
        """Block until every job (of `group`) is finished; False if `timeout` passed first."""
        with self._done:
            return self._done.wait_for(lambda: self.unfinished(group) == 0, timeout)

    def call(self, fn: Callable[[], None]) -> None:
        """Run `fn` on the I/O thread (if it raises, the loop logs it and goes on)."""
        self.loop.call_soon_threadsafe(fn)

    def resize(self, ncpus: int) -> None:
        """Change the number of local workers (from any thread)."""

        def resize() -> None:
            self.pool.resize(ncpus)
            self.watch.changed()

        self.call(resize)

    def add_remote(
        self, host: str, port: int, secret: bytes, *, persistent: bool = True, seal: bool = True,
        candidate: Candidate | None = None,
    ) -> None:  # fmt: skip
        """Connect to a ppserver (from any thread); a second call for the same address does nothing.
        `seal=False`: ask for an unsealed channel if the ppserver turns out to be on this machine.
        `candidate`: an address auto-discovery suggested (forgotten if it never answers)."""

        def make() -> Node:
            node = RemoteNode(
                self.loop, host, port, secret, persistent=persistent, on_results=self._on_results,
                on_lost=self._node_lost, silence_timeout=self.silence_timeout, seal=seal, candidate=candidate,
                on_change=self.watch.changed, on_rerun=self._requeue,
            )  # fmt: skip
            if self.live is not None:
                node.watch_output(self.live.pieces_from(node.name))
            return node

        name = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        # an announced address that is a node already (listed in ppservers too): nothing to try, and it
        # must not hold one of the discovery's places for addresses that have not answered
        self.add_node(name, make, on_exists=candidate.answered if candidate is not None else None)

    def add_node(
        self, name: str, make: Callable[[], Node], on_exists: Callable[[], None] | None = None
    ) -> None:
        """Add the node `make()` builds, on the I/O thread, unless a live node has that name already;
        `make` must hand results to `self._on_results(pairs, name)` and lost jobs to `self._requeue`."""

        def add() -> None:
            if self.exiting:
                return
            if any(node.name == name and not node.closed for node in self.nodes):
                if on_exists is not None:
                    on_exists()
                return
            node = make()
            node.refs = self.pool.refs  # `put()` refs, if any: its links are sent them (`refs`)
            self.nodes.append(node)
            try:
                node.start()
            except Exception as exc:  # noqa: BLE001 - a node that cannot start is that node's failure
                self._node_failed(node, exc, f"starting node {name}")
            self.watch.changed()

        self.call(add)

    def prune_nodes(self) -> None:
        """Forget nodes closed for good that never ran a job (discovered addresses that never answered,
        say), so that they do not pile up. The list is replaced, never changed in place under a reader."""
        nodes = self.nodes
        if any(node.closed and not node.jobs_done and not node.inflight for node in nodes):
            self.nodes = [
                node for node in nodes if not (node.closed and not node.jobs_done and not node.inflight)
            ]

    def destroy(self, timeout: float = 10.0) -> None:
        """Stop the I/O thread and every worker; unfinished jobs fail with `DestroyedServerError`."""
        with self._submit_lock:
            if self.exiting:
                return
            self.exiting = True
        if self._thread.is_alive():
            self.loop.call_soon_threadsafe(self._shutdown, lambda exc: self.loop.stop())
            self._thread.join(timeout)
        if self._thread.is_alive():
            log.error("the I/O thread did not stop within %.0f s; workers may be left running", timeout)
        else:
            self.pool.close()  # no-op if the I/O thread already closed it
            self.loop.close()
        self._fail_all(DestroyedServerError("Server was destroyed before the job completion"), self.queue)
        self._callbacks.stop()
        self.show_unshown()
        if self.live is not None:
            self.live.close()

    def show_unshown(self) -> None:
        """Print the output of every finished job that nobody asked about (on the calling thread)."""
        with JOBS_LOCK:
            texts = self.unshown.take_all()
        for output, spans in texts:
            write_output(output, spans)

    # -- the I/O thread --------------------------------------------------------------------------------

    def _run(self) -> None:
        try:
            self.loop.run_forever()
        except BaseException as exc:
            log.critical("the ppft I/O thread failed; every unfinished job fails with it", exc_info=True)
            error = PPFTError(f"internal error in the ppft I/O thread: {type(exc).__name__}: {exc}")
            with self._submit_lock:
                self.broken = error
            self._fail_all(error, list(self.queue) + self.pool.take_inflight())
            self.pool.close()

    def _shutdown(self) -> None:
        tasks = list(self.queue) + self.pool.take_inflight()
        tasks += close_nodes(self.nodes, self.loop.report)
        self.queue.clear()
        self.pool.close()
        self._fail_all(DestroyedServerError("Server was destroyed before the job completion"), tasks)
        self.loop.stop()

    def _dispatch(self) -> None:
        queue = self.queue
        if not queue:
            return
        try:
            self.pool.dispatch(queue)  # local slots first
        except Exception as exc:  # noqa: BLE001 - the pool guards each worker; this is its last line
            self.loop.report(exc, "dispatching jobs to the local workers failed; the loop goes on")
        for node in self.nodes:
            if not queue:
                return
            try:
                node.dispatch(queue)
            except Exception as exc:  # noqa: BLE001 - one node's bug closes that node only
                self._node_failed(node, exc, f"dispatching jobs to {node.name}")
        if queue:
            self._unplaced()

    def _unplaced(self) -> None:
        """Jobs are left in the queue after a dispatch: fail them if no node will ever take them, else
        watch that they do not wait in silence."""
        queue = self.queue
        pool = self.pool
        if pool.broken_reason and not pool.inflight and not self.nodes:
            jobs = []
            while queue:
                jobs.append(queue.popleft())
            self._fail_all(WorkerLostError(pool.broken_reason), jobs)
        elif self.watch.refused:
            self.watch.fail_queued()
        elif not self.watch.armed:
            self.watch.arm()

    def _node_failed(self, node: Node, exc: BaseException, what: str) -> None:
        """A call into `node` raised: the node closes its connection (its jobs run elsewhere, as for a lost
        node) and goes on as after a loss; if it cannot even do that, it is closed and its jobs requeued."""
        handler = getattr(node, "internal_error", None)
        if handler is not None:
            try:
                handler(exc, what)
                return
            except Exception as again:  # noqa: BLE001 - the node's own handler failed: close it from here
                self.loop.report(again, f"the error handler of node {node.name} raised too")
        else:
            self.loop.report(exc, f"{what} failed")
        tasks: list[Task] = []
        try:
            tasks = node.take_inflight()
            node.close()
        except Exception as again:  # noqa: BLE001 - best effort: the jobs it gave back are what matter
            self.loop.report(again, f"closing node {node.name} after a failure failed")
            node.closed = True
        if tasks:
            self._node_lost(tasks, node.name, internal_error_reason(exc))
        self.watch.changed()

    def fail_jobs(self, exc: BaseException, jobs: Iterable[Any]) -> None:
        """Fail `jobs` with `exc` (I/O thread)."""
        self._fail_all(exc, jobs)

    def _requeue(self, tasks: list[Task]) -> None:
        # A job whose result arrived already (its node failed while handing results over) is not run again.
        self.queue.extendleft(reversed([task for task in tasks if not task.done()]))  # type: ignore[attr-defined]

    def _node_lost(self, tasks: list[Task], node: str, reason: str) -> None:
        """A node was lost with `tasks` in flight: run them elsewhere, up to `MAX_NODE_LOSSES` times."""
        again: list[Task] = []
        failed: list[Job] = []
        for task in tasks:
            job: Job = task  # type: ignore[assignment]
            job.node_losses += 1
            (failed if job.node_losses >= MAX_NODE_LOSSES else again).append(job)
        if again:
            self._requeue(again)
        if failed:
            error = NodeLostError(
                f"node {node} was lost ({reason}) while it held the job; the job was on a lost node "
                f"{MAX_NODE_LOSSES} times, so it is not sent anywhere again"
            )
            self._fail_all(error, failed)

    def _on_local_results(self, pairs: list[tuple[Task, Result]]) -> None:
        self._on_results(pairs, "local")

    def _on_results(self, pairs: Iterable[tuple[Task, Result]], node: str) -> None:
        if not isinstance(pairs, list):
            pairs = list(pairs)
        walls = [result[4] for _, result in pairs]  # Result.wall_time
        self.counters.durations.add(walls, sum(walls))
        if self.live is not None:
            pairs = self.live.finish(pairs, node)  # the rest of their output, live: never printed again
        with self.done_lock:  # finished and counted in one hold (the module's text says why)
            try:  # one round trip of the jobs' lock for the whole frame
                finished, handoff = complete_jobs(pairs, node, unshown=self.unshown, wakes=self.loop.wakes)
            except Exception as exc:  # noqa: BLE001 - one job's result must not take its frame's jobs with it
                self.loop.report(exc, f"handing over a frame of {len(pairs)} result(s) from {node} failed")
                finished, handoff = complete_each(pairs, node, unshown=self.unshown, wakes=self.loop.wakes)
            if finished:
                self._finished(finished)
        if handoff:
            self._callbacks.put(handoff)

    def _fail_all(self, exc: BaseException, tasks: Iterable[Any]) -> None:
        finished: list[Job] = []
        handoff: list[tuple[Job, Result | None, str]] = []
        with self.done_lock:  # failed and counted in one hold, as results are (`_on_results`)
            for job in tasks:
                if fail_job(job, exc):
                    handoff.append((job, None, ""))
                finished.append(job)
            if finished:
                self._finished(finished)
        if handoff:
            self._callbacks.put(handoff)

    def _finished(self, jobs: list[Job], cancelled: bool = False) -> None:
        """Each job passes here exactly once (done, failed or cancelled): `wait` counts on it, and so does
        the status (`outcomes.count_finished`)."""
        with self.done_lock:
            counts = self._finished_counts
            total = 0
            failed: list[Job] | None = None
            for job in jobs:
                if job._counted:
                    continue
                job._counted = True
                group = job.group
                counts[group] = counts.get(group, 0) + 1
                total += 1
                if job._exception is not None:
                    if failed is None:
                        failed = []
                    failed.append(job)
            self._finished_total += total
            if total:
                count_finished(self.counters, total, failed, cancelled)
            if len(counts) >= self._sweep_at:
                self._forget_finished_groups()
            self._done.notify_all()

    def _forget_finished_groups(self) -> None:
        """Drop the counters of every group with nothing pending (a group absent from both counts has none),
        so a caller that uses a million group names keeps counters only for those with jobs in flight.

        Called with `done_lock` held; takes `_submit_lock` inside it, the one order in which both are ever
        held. Amortised: the next sweep waits until the groups counted have doubled."""
        counts = self._finished_counts
        with self._submit_lock:
            submitted = self._submitted
            for group in [g for g, n in counts.items() if submitted.get(g) == n]:
                del counts[group]
                del submitted[group]
        self._sweep_at = max(_SWEEP_MIN, 2 * len(counts))
