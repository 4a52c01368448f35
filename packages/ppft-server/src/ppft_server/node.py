"""`NodeServer`: the heart of ppserver. Accepts clients, authenticates them, runs their jobs.

    client --TCP--> listener --> HandshakeGate (capped) --> session (Stream, handshake deadline)
        --authenticated--> a client: NodeInfo sent; or a dial-in worker (it proved the workers secret)
    client: FunctionBody -> the function table; JobBatch -> its lane of the FairQueue (ids made unique);
            Cancel -> removed from the queue, answered as cancelled; over its cap -> its socket is not read
            JobLimits, Terminate -> time limits of its next jobs; jobs stopped, queued or running (`limits`)
    FairQueue --dispatch--> local WorkerPool, and links to dial-in workers
    results --> back to the session that sent the job, with the client's own job ids

Nothing is decoded, compiled or queued for a peer before it has proven the secret: the protocol state machine
emits no job event before that, and a session only exists for jobs once `Established` arrived. A peer that
fails (wrong secret, garbage, oversized frame, silent handshake) is logged with its address and the reason,
and dropped; so is an authenticated peer that breaks the rules of its role (`PeerError`, `peers`), told why
in a `Bye`; every other session keeps being served. A flood of connections is held off by the
`HandshakeGate` and never writes more than a few log lines a minute. A client that disconnects has its queued
jobs dropped and its running jobs stopped (their workers killed and replaced). A client that watches live
output (`WatchOutput`) gets what its running jobs write as they write it (`watch.Watchers`).
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import socket
import time
from operator import itemgetter
from typing import cast

from ppft_protocol import Established, JobBatch, NodeInfo, Result, ResultBatch, StatsReply
from ppft_protocol.batches import ForwardedResults
from ppft_protocol.relay import RawResults
from ppft_worker.observe import Counters
from ppft_worker.pool import WorkerPool
from ppft_worker.process import keep_freed_memory
from ppft_worker.pythons import THIS_PYTHON
from ppft_worker.runtime import Link, Loop, RefBook, ServedTask, Task, is_loopback, take_jobs

from .counting import count_raw, count_results
from .direct import DirectWorkers, pool_only
from .fairqueue import FairQueue
from .gate import DEFAULT_MAX_HANDSHAKES, DEFAULT_MAX_HANDSHAKES_PER_HOST, Door, HandshakeGate, LogBudget
from .gctune import collect_less
from .limits import ServerLimits
from .peers import (
    MAX_QUEUED_BYTES,
    MAX_UNSENT,
    WORKER_REFUSED,
    FunctionTable,
    PeerError,
    auto_queue_cap,
    check_jobs,
    no_workers_admitted,
    short_reason,
)
from .refs import release_refs
from .session import Session
from .version import __version__
from .watch import Watchers

__all__ = ["NodeServer"]

log = logging.getLogger("ppft.server")

_MAX_CAPACITY = 2**32 - 1  # NodeInfo.workers is a u32
_job_id = itemgetter(0)  # Job.job_id


def _by_owner(tasks: list[ServedTask] | list[ServedTask | None]) -> list[tuple[Session, list[int] | None]]:
    """Where a frame's results go: each session still listening, with the indexes of its results (None: all
    of them, the usual case of a frame whose jobs all came from one session). A None task is dropped."""
    head = next((task for task in tasks if task is not None), None)
    if head is None:
        return []
    owner = head.owner
    if all(task is not None and task.owner is owner for task in tasks):
        return [] if owner.closed else [(owner, None)]  # type: ignore[list-item]  # a ppserver's tasks: Session owners
    groups: dict[Session, list[int]] = {}
    for index, task in enumerate(tasks):
        if task is not None:
            groups.setdefault(cast("Session", task.owner), []).append(index)
    return [(owner, picks) for owner, picks in groups.items() if not owner.closed]


class NodeServer:
    """A ppserver: listen on `(host, port)`, run authenticated clients' jobs on `workers` local workers."""

    def __init__(
        self,
        *,
        host: str = "",
        port: int = 60000,
        secret: bytes,
        workers: int,
        restart: bool = False,
        socket_timeout: float = 3600.0,
        idle_timeout: float | None = None,
        name: str | None = None,
        allow_plain_loopback: bool = False,
        worker_secret: bytes | None = None,
        accept_workers: bool = False,
        max_handshakes: int = DEFAULT_MAX_HANDSHAKES,
        max_handshakes_per_host: int = DEFAULT_MAX_HANDSHAKES_PER_HOST,
        max_queued_jobs: int | None = None,
        worker_memory_limit: int | None = None,
        max_jobs_per_worker: int | None = None,
        refs_memory: int | None = 4 << 30,
        direct_workers: int | None = None,
    ) -> None:
        """`allow_plain_loopback`: grant an unsealed channel to a peer that asks for one, when it connects
        from a loopback address (`--allow-plain-loopback`); everyone else is sealed whatever it asks.
        `worker_secret`: the secret dial-in workers prove (`--workers-secret`); `accept_workers`: the client
        secret admits them too (`--accept-workers`); neither: dial-in workers are refused.
        `max_handshakes`, `max_handshakes_per_host`: connections in their handshake at once (in all, from one
        address). `max_queued_jobs`: a client's jobs queued here before its socket is no longer read
        (None: enough for every job a well-behaved client keeps in flight). `worker_memory_limit` (bytes),
        `max_jobs_per_worker`: the local workers' limits (`WorkerPool`). `refs_memory`: bytes of clients'
        `put()` objects held at once (`refs`; None: bounded by the memory available only). `direct_workers`:
        direct links at once (`direct`; None: `workers`; 0: none)."""
        self.host = host
        self.port = port
        self.secret = secret
        self.worker_secret = worker_secret
        self.accept_workers = accept_workers  # the client secret admits dial-in workers too
        self.admits_workers = accept_workers or worker_secret is not None
        self.allow_plain_loopback = allow_plain_loopback
        self.idle_timeout = idle_timeout
        self.handshake_timeout = 5.0
        self.silence_timeout = max(2.0, min(socket_timeout, 10.0))
        self.max_queued_jobs = max_queued_jobs
        self.name = name or f"{socket.gethostname()}:{port}"
        self.loop = Loop()
        self.queue = FairQueue()
        self.links: list[Link] = []
        self.sessions: set[Session] = set()
        self.functions = FunctionTable()
        self.counters = Counters()  # for the status page (--http): added to on this loop's thread only
        self.status_page = ""  # "http://HOST:PORT/" when it serves one (--http)
        self.refusals = LogBudget(self.loop, log.warning, what="connection(s) refused")
        self.refusals.on_note = self.counters.refuse
        self.gate = HandshakeGate(max_handshakes, max_handshakes_per_host, self.refusals)
        # fork_threads=1: `serve_forever` starts the workers by fork when it runs in a single-threaded process
        # (no announcer thread, not a test's thread), where no other thread can hold a lock the child needs.
        self.pool = WorkerPool(
            self.loop, workers, on_results=self.results, on_requeue=self.queue.requeue, restart=restart,
            fork_threads=1, on_raw_results=self.raw_results, memory_limit=worker_memory_limit,
            max_jobs_per_worker=max_jobs_per_worker, segments=True,
        )  # fmt: skip
        self.pool.name = f"ppserver {self.name}"
        self.pool.refs = self.refs = RefBook(refs_memory, copies=workers)  # clients' `put()` objects (`refs`)
        self.pool.on_death = lambda text: self.counters.failures.add("worker died", text)
        self.watchers = Watchers(self.pool, self.links)
        self.limits = ServerLimits(self)
        self.direct = DirectWorkers(self, workers if direct_workers is None else direct_workers,
                                    pool_only(worker_memory_limit, max_jobs_per_worker))  # fmt: skip
        self.address: tuple[str, int] = (host, port)
        self.started = time.time()
        self._ids = itertools.count(1)
        self._listener: socket.socket | None = None
        self._active = 0  # authenticated clients and dial-in workers
        self._idle_since: float | None = time.monotonic()
        self._paused: set[Session] = set()  # sessions whose socket is not read (backpressure)
        self._auto_cap = auto_queue_cap(workers)
        self._door: Door | None = None
        self._stopping = False
        self.loop.on_idle = self._dispatch

    # -- life ------------------------------------------------------------------------------------------

    def bind(self) -> tuple[str, int]:
        """Bind and listen now (so a port in use is reported before anything starts)."""
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((self.host, self.port))
            sock.listen(512)  # bursts of connections (a cluster's dial-ins starting at once) wait here
        except OSError:
            sock.close()
            raise
        sock.setblocking(False)
        self._listener = sock
        self.address = sock.getsockname()[:2]
        if self.port == 0:
            self.name = f"{socket.gethostname()}:{self.address[1]}"
            self.pool.name = f"ppserver {self.name}"
        return self.address

    def serve_forever(self) -> None:
        """Run until `stop()` (or `idle_timeout` seconds without a client)."""
        if self._listener is None:
            self.bind()
        assert self._listener is not None
        self._door = Door(self.loop, self._listener, self._arrived, self.gate, self.sessions)
        self.pool.start()
        self.direct.start(self.pool)  # its fork server, in the background: ready for the first clients' links
        if self.idle_timeout is not None:
            self.loop.call_later(0.2, self._check_idle)
        log.info("ppserver %s listening on %s:%d with %d workers", __version__, *self.address, self.pool.size)
        collect_less(True)  # after `pool.start()`: forked workers, which run users' code, keep the default
        keep_freed_memory()  # a 16 MiB frame in or out reuses the pages of the last one (no page faults)
        try:
            self.loop.run_forever()
        finally:
            collect_less(False)
            self.close()

    def stop(self, reason: str = "ppserver is shutting down") -> None:
        """Stop serving: clients are told why (so they requeue at once), workers stop; `serve_forever`
        returns. Safe from other threads and from signal handlers."""
        self._stopping = True

        def shutdown() -> None:
            self._shutdown_now(reason)
            self.loop.stop()

        self.loop.call_soon_threadsafe(shutdown)

    def close(self) -> None:
        """Release everything (also after a `bind()` whose `serve_forever()` never ran). Idempotent."""
        self._shutdown_now("ppserver stopped")
        self.loop.close()

    def _shutdown_now(self, reason: str) -> None:
        for session in list(self.sessions):
            session.closed = True
            session.stream.close(reason)
        self.sessions.clear()
        if self._door is not None:
            self._door.close()
            self._door = None
        if self._listener is not None:
            with contextlib.suppress(OSError):
                self._listener.close()
            self._listener = None
        self.refusals.close()
        self.direct.close()
        self.pool.close()

    def _check_idle(self) -> None:
        assert self.idle_timeout is not None
        if self._idle_since is not None and time.monotonic() - self._idle_since >= self.idle_timeout:
            log.info("no client for %.0f s: exiting (-t)", self.idle_timeout)
            self.stop("ppserver idle timeout")
            return
        self.loop.call_later(0.2, self._check_idle)

    # -- connections -----------------------------------------------------------------------------------

    def _arrived(self, sock: socket.socket, addr: tuple[str, int]) -> None:
        """A new connection (from the `Door`): a session in its handshake, counted by the gate."""
        if self._stopping:
            sock.close()
            return
        host = str(addr[0])
        session = Session(self, sock, f"{host}:{addr[1]}", host, allow_plain=self.grants_plain(host))
        if session.closed:
            return  # reset before we could even greet it: nothing is left of it
        self.sessions.add(session)
        self.gate.admit(session)

    def grants_plain(self, host: str) -> bool:
        """Whether a peer connecting from address `host` may have an unsealed channel (if it asks too).

        Only with `allow_plain_loopback`, and only from 127.0.0.0/8, ::1 or ::ffff:127.x: both ends are then
        on this machine, where no network can see the traffic; the peer address is the accepted socket's,
        which the peer cannot choose beyond the host it connects from."""
        return self.allow_plain_loopback and is_loopback(host)

    def session_authenticated(self, session: Session, event: Established) -> None:
        self.gate.leave(session)
        channel = f"sealed with {event.cipher}" if event.cipher else "unsealed: loopback, both ends agreed"
        if session.stream.conn.peer_worker:
            if not self.admits_workers:
                self.refuse(session, f"{WORKER_REFUSED}: {no_workers_admitted(False)}")
                return
            session.worker = True
            log.info("dial-in worker %s authenticated (%s)", session.peer, channel)
        else:
            log.info("client %s authenticated (%s)", session.peer, channel)
        session.counted = True
        session.channel = channel
        self._active += 1
        self._idle_since = None
        session.stream.send(self.node_info())

    def refuse(self, session: Session, reason: str) -> None:
        """Close an authenticated session that broke the rules of its role, telling its peer why (`Bye`)."""
        if session.closed:
            return
        role = "dial-in worker" if session.worker or session.stream.conn.peer_worker else "client"
        log.warning("closed the session of %s %s: %s", role, session.peer, reason)
        self.counters.failures.add("session closed", f"closed the session of {role} {session.peer}: {reason}")
        session.closed = True
        session.stream.close(f"session closed by the ppserver: {reason}")
        self.session_closed(session, "")

    def session_closed(self, session: Session, reason: str) -> None:
        session.closed = True
        self.gate.leave(session)
        self._paused.discard(session)
        if reason:  # "" when this side closed it, having said why already
            if session.counted:  # a connection that asked for a direct link, ended before the answer: debug
                (log.debug if session.attaching else log.info)(
                    "%s %s: %s", "dial-in" if session.worker else "client", session.peer, reason
                )
            else:
                what = "dial-in worker" if session.stream.conn.peer_worker else "connection"
                self.refusals.note(f"refused {what} from {session.peer}: {reason}", short_reason(reason))
        self.sessions.discard(session)
        self.functions.release(session)
        if session.counted and not session.worker:
            release_refs(self, session, ())
        self.watchers.drop(session)
        dropped = self.queue.drop(session.lane)
        if session.link is not None:
            self.links.remove(session.link)
            self.queue.requeue(session.link.take_inflight())
            self.capacity_changed()
        if dropped:
            log.info("dropped %d queued job(s) of %s", len(dropped), session.peer)
            self.counters.tally.cancelled += len(dropped)
        if len(session.live) > len(dropped):  # jobs of its are running: nobody wants them any more
            self._abandon(session)
        if session.counted:
            session.counted = False
            self._active -= 1
            if not self._active:
                self._idle_since = time.monotonic()

    def _abandon(self, session: Session) -> None:
        """Stop the running jobs of a client that left: local workers are killed and replaced, dial-in
        workers that speak version 2 are told (they do the same)."""
        stopped = self.pool.abandon(lambda task: cast("ServedTask", task).owner is session)
        if stopped:
            log.info("stopped %d running job(s) of %s, which left", len(stopped), session.peer)
            self.counters.tally.cancelled += len(stopped)
        for link in self.links:
            if link.stream.conn.version >= 2:
                mine = [i for i, t in link.inflight.items() if cast("ServedTask", t).owner is session]
                link.cancel(tuple(mine))

    def worker_joined(self, session: Session, info: NodeInfo) -> None:
        assert session.link is not None
        self.links.append(session.link)
        self.watchers.link_added(session.link)
        log.info("%s dialled in with %d worker(s)", session.peer, info.workers)
        self.capacity_changed()

    def node_info(self) -> NodeInfo:
        """What clients are told: this server's capacity counts its dial-in workers too; and, on protocol
        version 2, where its status page is (--http)."""
        return NodeInfo(
            "server", min(self.workers, _MAX_CAPACITY), __version__, self.name, THIS_PYTHON, self.status_page
        )

    @property
    def workers(self) -> int:
        return self.pool.size + sum(link.workers for link in self.links)

    def capacity_changed(self) -> None:
        """Dial-in workers came or went: tell every client, so its window follows (and so does the cap)."""
        self._auto_cap = auto_queue_cap(self.workers)
        info = self.node_info()
        for session in self.sessions:
            if session.counted and not session.worker and not session.stream.closed:
                session.stream.send(info)

    # -- jobs ------------------------------------------------------------------------------------------

    def accept_jobs(self, session: Session, batch: JobBatch) -> None:
        live = session.live
        before = len(live)
        # A duplicate id shows in the set's size: one C-level update a frame (and one removal a result),
        # no Python loop per job on ppserver's hot path (`scripts/bench --only remote`).
        live.update(map(_job_id, batch.jobs))
        if len(live) != before + len(batch.jobs):
            raise PeerError(check_jobs(batch, len(live) - before))
        tasks, unknown = take_jobs(session.bodies, batch, self._ids, session)
        if session.limits:  # a JobLimits came first: only a client that puts time limits on jobs pays this
            self.limits.apply(session, tasks)
        if unknown:
            session.stream.send(ResultBatch(tuple(unknown)))
            raise PeerError(unknown[0].error_message)
        lane = session.lane
        self.queue.extend(lane, tasks)
        if len(lane) >= self.queue_cap:
            self._pause(session)
        elif batch.jobs:
            size = len(batch.jobs[0].args) + 45  # the frame's first job stands for the rest
            session.job_bytes = (session.job_bytes * 7 + size) >> 3
            if len(lane) * session.job_bytes >= MAX_QUEUED_BYTES:
                self._pause(session)

    @property
    def queue_cap(self) -> int:
        """A client's jobs queued here before its connection is no longer read."""
        return self.max_queued_jobs or self._auto_cap

    def results(self, pairs: list[tuple[Task, Result]]) -> None:
        """Results from the pool or a dial-in link, back to the sessions that sent the jobs, under their own
        job ids."""
        served = cast("list[tuple[ServedTask, Result]]", pairs)  # the tasks this server queued
        if not served:
            return
        count_results(self.counters, pairs)
        for owner, picks in _by_owner([task for task, _ in served]):
            chosen = [served[i] for i in picks] if picks is not None else served
            ids = tuple([task.client_id for task, _ in chosen])
            owner.done += len(ids)
            owner.live.difference_update(ids)
            owner.send(ForwardedResults(ids, tuple([result for _, result in chosen])))
            if owner.stream.unsent >= MAX_UNSENT:
                self._pause(owner)

    def raw_results(self, batch: RawResults, tasks: list[Task | None]) -> None:
        """A result frame of a local worker, passed on undecoded to the sessions that sent the jobs, under
        their own job ids; `tasks[i]` is the task of result `i` (None: no longer in flight, dropped)."""
        served: list[ServedTask | None] = tasks  # type: ignore[assignment]  # the tasks this server queued
        for owner, picks in _by_owner(served):
            chosen: list[ServedTask] = [served[i] for i in picks] if picks is not None else served  # type: ignore[assignment, misc]
            ids = [task.client_id for task in chosen]
            owner.done += len(ids)
            owner.live.difference_update(ids)
            owner.send(batch.forward(ids, picks))
            if owner.stream.unsent >= MAX_UNSENT:
                self._pause(owner)
        count_raw(self.counters, batch, tasks)  # once the results are on their way: a client waits for them

    def _pause(self, session: Session) -> None:
        """Hold back a client over its caps: its socket is not read (its jobs wait in the network buffers,
        its own sends block), and while it leaves too many results unread its jobs wait their turn too;
        until it is back under half of every cap. Nothing is dropped."""
        if session.closed:
            return
        if session not in self._paused:
            self._paused.add(session)
            session.stream.pause_reading()
        if session.stream.unsent >= MAX_UNSENT:
            self.queue.park(session.lane)
        log.debug("holding back %s: %d job(s) queued, %d byte(s) of results unread", session.peer,
                  len(session.lane), session.stream.unsent)  # fmt: skip

    def _resume_paused(self) -> None:
        cap = self.queue_cap // 2
        for session in list(self._paused):
            lane = session.lane
            if session.stream.unsent < MAX_UNSENT // 2:
                self.queue.unpark(lane)
                if len(lane) <= cap and len(lane) * session.job_bytes < MAX_QUEUED_BYTES // 2:
                    self._paused.discard(session)
                    session.stream.resume_reading()

    def _dispatch(self) -> None:
        queue = self.queue
        if queue:
            source = queue.single_lane() or queue  # one client alone: its lane directly, a deque's C methods
            self.pool.dispatch(source)
            for link in self.links:
                if not source:
                    break
                link.dispatch(source)
            queue.prune()
        if self._paused:
            self._resume_paused()

    # -- statistics ------------------------------------------------------------------------------------

    @property
    def jobs_done(self) -> int:
        return self.pool.jobs_done + self.direct.jobs_done + sum(link.jobs_done for link in self.links)

    @property
    def job_time(self) -> float:
        return self.pool.job_time + self.direct.job_time + sum(link.job_time for link in self.links)

    def stats_reply(self) -> StatsReply:
        clients = sum(1 for s in self.sessions if s.counted and not s.worker)
        return StatsReply(self.jobs_done, self.job_time, min(self.workers, _MAX_CAPACITY), clients)

    def stats_table(self) -> str:
        """ppft-style statistics text (ppserver prints it on SIGUSR1)."""
        rows: list[tuple[str, int, float]] = [("local", self.pool.jobs_done, self.pool.job_time)]
        rows += [(link.name, link.jobs_done, link.job_time) for link in self.links]
        rows.append(("direct workers", self.direct.jobs_done, self.direct.job_time))  # as they reported
        total = sum(n for _, n, _ in rows) or 1
        lines = [
            f"ppserver {self.name} statistics:",
            " job count | % of all jobs | job time sum | time per job | job server",
        ]
        for name, n, t in rows:
            if n:
                lines.append(
                    f"    {n:6d} |        {100.0 * n / total:6.2f} |     {t:8.4f} |  {t / n:11.6f} | {name}"
                )
        reply = self.stats_reply()
        lines.append(f"Time elapsed since server creation {time.time() - self.started}")
        lines.append(f"{len(self.queue)} queued jobs, {reply.workers} workers, {reply.clients} clients")
        return "\n".join(lines) + "\n"
