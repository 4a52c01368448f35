"""`NodeServer`: the heart of ppserver. Accepts clients, authenticates them, runs their jobs.

    client --TCP--> listener --> session (Stream, handshake deadline) --authenticated--> NodeInfo sent
    session: FunctionBody -> its own body table; JobBatch -> its lane of the FairQueue (ids made unique)
    FairQueue --dispatch--> local WorkerPool, and links to dial-in workers (NodeInfo kind "worker")
    results --> back to the session that sent the job, with the client's own job ids

Nothing is decoded, compiled or queued for a peer before it has proven the secret: the protocol state machine
emits no job event before that, and a session only exists for jobs once `Established` arrived. A peer that
fails (wrong secret, garbage, oversized frame, silent handshake) is logged with its address and the reason,
and dropped; every other client keeps being served. A client that disconnects has its queued jobs dropped
and the results of its running jobs discarded.
"""

from __future__ import annotations

import contextlib
import gc
import itertools
import logging
import socket
import threading
import time
from collections import deque
from typing import cast

from ppft_protocol import (
    Cancel,
    Connection,
    Established,
    Event,
    FunctionBody,
    JobBatch,
    NodeInfo,
    Result,
    ResultBatch,
    Role,
    StatsReply,
    StatsRequest,
)
from ppft_protocol.batches import ForwardedResults
from ppft_protocol.relay import RawResults
from ppft_worker.addresses import is_loopback
from ppft_worker.cpufeatures import offer_aes_gcm
from ppft_worker.intake import Owner, ServedTask, take_jobs
from ppft_worker.link import Link
from ppft_worker.loop import Loop
from ppft_worker.pool import WorkerPool
from ppft_worker.stream import Stream
from ppft_worker.tasks import Task

from .fairqueue import FairQueue
from .version import __version__

__all__ = ["NodeServer"]

log = logging.getLogger("ppft.server")

_GC_THRESHOLD = 10_000
_gc_lock = threading.Lock()
_gc_serving = 0  # servers running in this process
_gc_default = gc.get_threshold()


def _collect_less(serving: bool) -> None:
    """Raise the collector's first threshold while a server runs in this process; restore it after the last.

    Every queued job holds a few objects for a few milliseconds, and a steady stream frees about as many as it
    makes. The default threshold (700 objects more made than freed) still set the collector off every few
    hundred tiny jobs, with a walk of the whole heap every few thousand: a tenth of ppserver's time. 10,000
    is reached by bursts only; nothing here depends on cycles being collected soon."""
    global _gc_serving, _gc_default
    with _gc_lock:
        if serving:
            _gc_serving += 1
            if _gc_serving == 1:
                _gc_default = gc.get_threshold()
                gc.set_threshold(max(_gc_default[0], _GC_THRESHOLD), *_gc_default[1:])
        else:
            _gc_serving -= 1
            if _gc_serving == 0:
                gc.set_threshold(*_gc_default)


def _by_owner(tasks: list[ServedTask] | list[ServedTask | None]) -> list[tuple[Owner, list[int] | None]]:
    """Where a frame's results go: each owner still listening, with the indexes of its results (None: all of
    them, the usual case of a frame whose jobs all came from one session). A None task is dropped."""
    head = next((task for task in tasks if task is not None), None)
    if head is None:
        return []
    owner = head.owner
    if all(task is not None and task.owner is owner for task in tasks):
        return [] if owner.closed else [(owner, None)]
    groups: dict[Owner, list[int]] = {}
    for index, task in enumerate(tasks):
        if task is not None:
            groups.setdefault(task.owner, []).append(index)
    return [(owner, picks) for owner, picks in groups.items() if not owner.closed]


class _Session:
    """One authenticated peer: a client sending jobs, or dial-in workers offering to run them."""

    def __init__(self, server: NodeServer, sock: socket.socket, peer: str, *, allow_plain: bool) -> None:
        self.server = server
        self.peer = peer
        self.bodies: dict[bytes, FunctionBody] = {}
        self.lane: deque[Task] = deque()
        self.link: Link | None = None
        self.authenticated = False
        conn = Connection(Role.SERVER, server.secret, allow_plain=allow_plain, aes_gcm=offer_aes_gcm())
        self.stream = Stream(
            server.loop, sock, conn, peer=peer, on_event=self._event, on_close=self._closed,
            handshake_timeout=server.handshake_timeout, silence_timeout=server.silence_timeout,
        )  # fmt: skip

    def _event(self, event: Event) -> None:
        server = self.server
        if isinstance(event, Established):
            self.authenticated = True
            server.session_authenticated(self, event.cipher)
            self.stream.send(server.node_info())
        elif self.link is not None:
            self.link.handle(event)
        elif isinstance(event, JobBatch):
            server.accept_jobs(self, event)
        elif isinstance(event, FunctionBody):
            self.bodies[event.digest] = event
        elif isinstance(event, NodeInfo) and event.kind == "worker":
            self.link = Link(f"dial-in {self.peer}", self.stream, event, on_results=server.results)
            server.links.append(self.link)
            log.info("%s dialled in with %d worker(s)", self.peer, event.workers)
            server.capacity_changed()
        elif isinstance(event, StatsRequest):
            self.stream.send(server.stats_reply())
        elif isinstance(event, Cancel):
            server.cancel(self, event.job_ids)

    def _closed(self, reason: str) -> None:
        self.server.session_closed(self, reason)


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
    ) -> None:
        """`allow_plain_loopback`: grant an unsealed channel to a peer that asks for one, when it connects
        from a loopback address (`--allow-plain-loopback`); everyone else is sealed whatever it asks."""
        self.host = host
        self.port = port
        self.secret = secret
        self.allow_plain_loopback = allow_plain_loopback
        self.idle_timeout = idle_timeout
        self.handshake_timeout = 5.0
        self.silence_timeout = max(2.0, min(socket_timeout, 10.0))
        self.name = name or f"{socket.gethostname()}:{port}"
        self.loop = Loop()
        self.queue = FairQueue()
        self.links: list[Link] = []
        self.sessions: set[_Session] = set()
        # fork_threads=1: `serve_forever` starts the workers by fork when it runs in a single-threaded process
        # (no announcer thread, not a test's thread), where no other thread can hold a lock the child needs.
        self.pool = WorkerPool(self.loop, workers, on_results=self.results, on_requeue=self.queue.requeue,
                               restart=restart, fork_threads=1, on_raw_results=self.raw_results)  # fmt: skip
        self.address: tuple[str, int] = (host, port)
        self.started = time.time()
        self._ids = itertools.count(1)
        self._listener: socket.socket | None = None
        self._idle_since: float | None = time.monotonic()
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
            sock.listen(128)
        except OSError:
            sock.close()
            raise
        sock.setblocking(False)
        self._listener = sock
        self.address = sock.getsockname()[:2]
        if self.port == 0:
            self.name = f"{socket.gethostname()}:{self.address[1]}"
        return self.address

    def serve_forever(self) -> None:
        """Run until `stop()` (or `idle_timeout` seconds without a client)."""
        if self._listener is None:
            self.bind()
        assert self._listener is not None
        self.loop.add_reader(self._listener.fileno(), self._accept, self._listener_failed)
        self.pool.start()
        if self.idle_timeout is not None:
            self.loop.call_later(0.2, self._check_idle)
        log.info("ppserver %s listening on %s:%d with %d workers", __version__, *self.address, self.pool.size)
        _collect_less(True)  # after `pool.start()`: forked workers, which run users' code, keep the default
        try:
            self.loop.run_forever()
        finally:
            _collect_less(False)
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
            session.stream.close(reason)
        self.sessions.clear()
        if self._listener is not None:
            self.loop.remove_reader(self._listener.fileno())
            with contextlib.suppress(OSError):
                self._listener.close()
            self._listener = None
        self.pool.close()

    def _check_idle(self) -> None:
        assert self.idle_timeout is not None
        if self._idle_since is not None and time.monotonic() - self._idle_since >= self.idle_timeout:
            log.info("no client for %.0f s: exiting (-t)", self.idle_timeout)
            self.stop("ppserver idle timeout")
            return
        self.loop.call_later(0.2, self._check_idle)

    # -- sessions --------------------------------------------------------------------------------------

    def _accept(self) -> None:
        assert self._listener is not None
        for _ in range(64):
            try:
                sock, addr = self._listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                log.warning("accept failed: %s", exc)
                return
            if self._stopping:
                sock.close()
                continue
            peer = f"{addr[0]}:{addr[1]}"
            self.sessions.add(_Session(self, sock, peer, allow_plain=self.grants_plain(addr[0])))
            self._idle_since = None

    def _listener_failed(self, exc: BaseException) -> None:
        """`_accept` raised (the loop logged it): the listener stays, accepting again after a pause, so that
        a bug that repeats cannot spin the loop. Sessions are guarded by their streams."""
        listener = self._listener
        if listener is None:
            return
        fd = listener.fileno()
        self.loop.remove_reader(fd)

        def resume() -> None:
            if self._listener is listener and not self._stopping:
                self.loop.add_reader(fd, self._accept, self._listener_failed)

        self.loop.call_later(1.0, resume)

    def grants_plain(self, host: str) -> bool:
        """Whether a peer connecting from address `host` may have an unsealed channel (if it asks too).

        Only with `allow_plain_loopback`, and only from 127.0.0.0/8, ::1 or ::ffff:127.x: both ends are then
        on this machine, where no network can see the traffic; the peer address is the accepted socket's,
        which the peer cannot choose beyond the host it connects from."""
        return self.allow_plain_loopback and is_loopback(host)

    def session_authenticated(self, session: _Session, cipher: str = "") -> None:
        channel = f"sealed with {cipher}" if cipher else "unsealed: loopback, both ends agreed"
        log.info("client %s authenticated (%s)", session.peer, channel)

    def session_closed(self, session: _Session, reason: str) -> None:
        if session.authenticated:
            log.info("%s %s: %s", "dial-in" if session.link else "client", session.peer, reason)
        else:
            log.warning("refused connection from %s: %s", session.peer, reason)
        self.sessions.discard(session)
        dropped = self.queue.drop(session.lane)
        if session.link is not None:
            self.links.remove(session.link)
            self.queue.requeue(session.link.take_inflight())
            self.capacity_changed()
        if dropped:
            log.info("dropped %d queued job(s) of %s", len(dropped), session.peer)
        if not self.sessions:
            self._idle_since = time.monotonic()

    def node_info(self) -> NodeInfo:
        """What clients are told: this server's capacity counts its dial-in workers too."""
        return NodeInfo("server", self.workers, __version__, self.name)

    @property
    def workers(self) -> int:
        return self.pool.size + sum(link.workers for link in self.links)

    def capacity_changed(self) -> None:
        """Dial-in workers came or went: tell every client, so its window follows."""
        info = self.node_info()
        for session in self.sessions:
            if session.authenticated and session.link is None and not session.stream.closed:
                session.stream.send(info)

    # -- jobs ------------------------------------------------------------------------------------------

    def accept_jobs(self, session: _Session, batch: JobBatch) -> None:
        tasks, unknown = take_jobs(session.bodies, batch, self._ids, session.stream)
        if tasks:
            self.queue.extend(session.lane, tasks)
        if unknown:
            session.stream.send(ResultBatch(tuple(unknown)))

    def cancel(self, session: _Session, job_ids: tuple[int, ...]) -> None:
        wanted = set(job_ids)
        kept = [t for t in session.lane if t.client_id not in wanted]  # type: ignore[attr-defined]
        session.lane.clear()
        session.lane.extend(kept)

    def results(self, pairs: list[tuple[Task, Result]]) -> None:
        """Results from the pool or a dial-in link, back to the sessions that sent the jobs, under their own
        job ids."""
        served = cast("list[tuple[ServedTask, Result]]", pairs)  # the tasks this server queued
        if not served:
            return
        for owner, picks in _by_owner([task for task, _ in served]):
            chosen = [served[i] for i in picks] if picks is not None else served
            ids = tuple([task.client_id for task, _ in chosen])
            owner.send(ForwardedResults(ids, tuple([result for _, result in chosen])))

    def raw_results(self, batch: RawResults, tasks: list[Task | None]) -> None:
        """A result frame of a local worker, passed on undecoded to the sessions that sent the jobs, under
        their own job ids; `tasks[i]` is the task of result `i` (None: no longer in flight, dropped)."""
        served = cast("list[ServedTask | None]", tasks)  # the tasks this server queued
        for owner, picks in _by_owner(served):
            chosen = cast("list[ServedTask]", [served[i] for i in picks] if picks is not None else served)
            owner.send(batch.forward([task.client_id for task in chosen], picks))

    def _dispatch(self) -> None:
        queue = self.queue
        if not queue:
            return
        source = queue.single_lane() or queue  # one client alone: its lane directly, a deque's C methods
        self.pool.dispatch(source)
        for link in self.links:
            if not source:
                break
            link.dispatch(source)
        queue.prune()

    # -- statistics ------------------------------------------------------------------------------------

    @property
    def jobs_done(self) -> int:
        return self.pool.jobs_done + sum(link.jobs_done for link in self.links)

    @property
    def job_time(self) -> float:
        return self.pool.job_time + sum(link.job_time for link in self.links)

    def stats_reply(self) -> StatsReply:
        clients = sum(1 for s in self.sessions if s.authenticated and s.link is None)
        return StatsReply(self.jobs_done, self.job_time, self.workers, clients)

    def stats_table(self) -> str:
        """ppft-style statistics text (ppserver prints it on SIGUSR1)."""
        rows: list[tuple[str, int, float]] = [("local", self.pool.jobs_done, self.pool.job_time)]
        rows += [(link.name, link.jobs_done, link.job_time) for link in self.links]
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
