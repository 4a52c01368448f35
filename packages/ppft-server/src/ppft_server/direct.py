"""`DirectWorkers`: ppserver's direct links, a worker process of its own for one client's connection.

    client --new connection, handshake--> session --Attach (its first message)--> DirectWorkers.attach
        refused: Bye("direct link refused: ...") and the connection closes
        agreed:  a worker process is started with the socket (forked by the fork server, or exec'd),
                 Attached(direct_id) is the last frame the ppserver writes there, the socket leaves the loop
                 (`Stream.detach`); the worker runs a new handshake with the client and serves it
                 (`ppft_worker.process.direct`)
    client --EndDirect(ids), on its ordinary session--> those workers are SIGKILLed (a running job included)

A job then crosses two processes instead of four (client -> ppserver -> worker -> ppserver -> client). The
ppserver sees none of those jobs, so each direct worker reports its counts on a pipe of its own
(`ppft_worker.process.report`: cumulative jobs done, failed, run time, at most every 0.5 s and as it ends),
whose read end is in the loop: what changed goes into the ppserver's counters (`counting.count_direct`), as
relayed jobs do. A report that is not one (a job of that worker may write anything on the pipe) ends that
pipe, logged; the worker goes on serving its client. What it keeps of each direct worker is its process, its
own descriptor of the socket (to see, with TCP_INFO, that the client has gone), the read end of its report
pipe, its counts, the peer's address and the start time. Its jobs may use the `put()` refs its client put
here: each direct worker is passed them on a pipe of its own, as the pool's workers are (`direct_refs`).

A direct worker is forked by the pool's fork server (`WorkerLives.share_forkserver`, started with the
ppserver, in the background; while it starts, an answer waits for it on a timer, up to `FORKSERVER_WAIT`), or
exec'd when it cannot be (not Linux, PPFT_START=exec, the server failed: `start_direct_worker`): a client's
links are up in a few ms, not an interpreter start each. A forked one is the fork server's child (a
`ServedProcess`, whose exit code the fork server reports), an exec'd one the ppserver's (`subprocess.Popen`);
both are watched and killed alike. A direct worker is reaped as it exits (its pidfd in the loop, then for a
forked one short polls until its exit code came; or a poll every `WATCH_INTERVAL` where there is no pidfd; a
non-zero exit is a warning), SIGKILLed when its client's end of the connection is closed (its running job is
for nobody) or on `EndDirect`, and all of them when the ppserver stops. They are tied to the ppserver's life
too (PR_SET_PDEATHSIG, as pool workers; a forked one to its fork server, tied to the ppserver).

It refuses when direct links are off (`--direct-workers 0`), when all of them are in use, when the ppserver's
workers are held to limits only its pool enforces (`--worker-memory-limit`, `--max-jobs-per-worker`), or when
no process can be started. Nothing here blocks the I/O thread (but `close`, at the end, and a fork server's
answer, `REPLY_TIMEOUT` at most), and a failure in a direct worker's callbacks ends that direct worker only.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from typing import Any, Protocol

from ppft_protocol import Attached
from ppft_worker.observe import Counters
from ppft_worker.pool import ForkServer, WorkerPool, WorkerProcess, describe_exit, start_direct_worker
from ppft_worker.process import REPORT_RECORD
from ppft_worker.runtime import Loop, RefBook, Stream, Timer, offer_aes_gcm

from .counting import DirectCounts, count_direct
from .direct_refs import RefPipe, ref_pipe

__all__ = [
    "FORKSERVER_WAIT",
    "REFUSED",
    "WATCH_INTERVAL",
    "DirectWorker",
    "DirectWorkers",
    "Session",
    "pool_only",
]

log = logging.getLogger("ppft.server")

REFUSED = "direct link refused"
"""How every refusal of a direct link begins (the rest says why, and what to do)."""

WATCH_INTERVAL = 2.0
"""Seconds between two looks at each direct worker's connection (and, without pidfds, at its process)."""

FORKSERVER_WAIT = 2.0
"""Seconds from its start during which the fork server is waited for (the answer to Attach is delayed) rather
than a direct worker exec'd: its start is one interpreter's, begun before the one an exec would start."""

_CLOSE_GRACE = 5.0  # seconds `close` waits for the SIGKILLed workers to be reaped
_EXIT_POLL = 0.002  # seconds before a forked worker that has exited is polled for its exit code (doubling)
_STARTING_POLL = 0.01  # seconds between two looks at a fork server that is starting, while an answer waits
_TCP_ESTABLISHED = 1  # tcpi_state, the first byte of struct tcp_info (Linux)
_KEEPALIVE = (("TCP_KEEPIDLE", 30), ("TCP_KEEPINTVL", 10), ("TCP_KEEPCNT", 3))
_REPORTS_READ = REPORT_RECORD.size * 64  # bytes read from a report pipe at once: whole records


class _Host(Protocol):
    loop: Loop
    secret: bytes
    counters: Counters
    refs: RefBook

    def grants_plain(self, host: str) -> bool: ...


class Session(Protocol):
    """What is used of the session that sent Attach (`ppft_server.session.Session`)."""

    closed: bool
    peer: str
    host: str
    stream: Stream

    def end(self, bye: str) -> None: ...


def pool_only(memory_limit: int | None, max_jobs: int | None) -> str:
    """Why direct links are refused when the ppserver's workers have limits only its pool enforces; ""."""
    flags = [flag for flag, value in (("--worker-memory-limit", memory_limit), ("--max-jobs-per-worker",
             max_jobs)) if value]  # fmt: skip
    if not flags:
        return ""
    return (
        f"this ppserver's workers are held to {' and '.join(flags)}, which only its pool enforces (a direct "
        f"worker would escape it): jobs go through the ppserver"
    )


@dataclass(eq=False)
class DirectWorker:
    """One direct worker: its process, the ppserver's descriptor of its socket, whom it serves."""

    direct_id: int
    proc: WorkerProcess  # a `subprocess.Popen`, or a `ServedProcess` (forked by the fork server)
    sock: socket.socket | None  # closed (None) once the worker is killed: the client then sees EOF at its end
    peer: str
    started: float = field(default_factory=time.time)
    since: float = field(default_factory=time.monotonic)
    pidfd: int = -1
    killed: str = ""  # why this side killed it
    report: int = -1  # the read end of its report pipe (non-blocking, in the loop); -1 once ended
    counts: DirectCounts = (0, 0, 0.0)  # as it last reported them (jobs done, failed, run time)
    refs: RefPipe | None = None  # the write end of its ref pipe (`direct_refs`); None if it has none

    @property
    def pid(self) -> int:
        return self.proc.pid


class DirectWorkers:
    """The direct workers of one ppserver: `limit` of them at most (0: direct links off). `why_not`: a reason
    every direct link is refused for, "" if none (the pool's limits)."""

    def __init__(self, server: _Host, limit: int, why_not: str = "") -> None:
        self.server = server
        self.loop = server.loop
        self.limit = limit
        self.why_not = why_not
        self.workers: dict[int, DirectWorker] = {}
        self.started = 0  # direct workers started, in all (the status page)
        self.jobs_done = 0  # jobs its direct workers reported, in all (StatsReply, the statistics table)
        self.job_time = 0.0
        self._timer: Timer | None = None
        self._closed = False
        self._forkserver: ForkServer | None = None

    def start(self, pool: WorkerPool) -> None:
        """The ppserver starts: its pool's fork server forks the direct workers from now on, once it is ready
        (started now, in the background); not if every direct link is refused anyway."""
        if self.limit > 0 and not self.why_not:
            self._forkserver = pool.share_forkserver()

    # -- a client asks -----------------------------------------------------------------------------------

    def attach(self, session: Session) -> None:
        """`session` sent Attach, its first message; its socket is no longer read. The answer is given on
        the loop's next round, so that anything it sent after Attach in the same read is seen first (and
        closes the session: a client sends nothing more until the answer)."""
        self.loop.call_soon_threadsafe(lambda: self._answer(session), lambda _: self._answer_failed(session))

    def refusal(self) -> str:
        """Why a direct link would be refused now; "" if it would not."""
        if self._closed:
            return "the ppserver is shutting down"
        if self.limit <= 0:
            return "this ppserver runs no direct workers (--direct-workers 0): send the jobs through it"
        if self.why_not:
            return self.why_not
        if len(self.workers) >= self.limit:
            return f"all {self.limit} direct workers are in use: jobs go through the ppserver"
        return ""

    def _answer(self, session: Session) -> None:
        if session.closed or session.stream.closed:
            return  # it broke a rule meanwhile (closed, with the reason), or went away
        why = self.refusal()
        server = self._forkserver
        # (`ready` starts a new fork server if the last one failed: this link and those after it wait for it)
        if not why and server is not None and not server.ready() and server.starting(FORKSERVER_WAIT):
            self.loop.call_later(_STARTING_POLL, lambda: self._answer(session), lambda _: self._answer_failed(
                session))  # fmt: skip
            return
        sock = session.stream.sock
        proc: WorkerProcess | None = None
        report = refs_w = -1
        if not why and isinstance(sock, socket.socket):
            report, report_w = _report_pipe()
            refs_r, refs_w = ref_pipe()
            try:
                proc = start_direct_worker(sock, self.server.secret, allow_plain=self.server.grants_plain(
                    session.host), aes_gcm=offer_aes_gcm(), report_fd=report_w, refs_fd=refs_r,
                    server=server)  # fmt: skip
            except OSError as exc:
                why = f"no worker process could start ({exc.strerror or exc}): jobs go through the ppserver"
            finally:
                _close_fds(report_w, refs_r)  # the worker's copies are the only ones: EOF once one side ends
        if proc is None:
            _close_fds(report, refs_w)
            why = why or "this connection cannot be handed over"
            log.info("%s to client %s: %s", REFUSED, session.peer, why)
            session.end(f"{REFUSED}: {why}")
            return
        direct_id = self._new_id()
        session.stream.send(Attached(direct_id))  # the last frame this side writes on the connection
        kept = session.stream.detach()
        session.end("")
        if kept is None:
            log.warning("client %s: Attached could not be written at once: the direct worker is stopped",
                        session.peer)  # fmt: skip
            with contextlib.suppress(OSError):
                proc.kill()
            _close_fds(report, refs_w)
            self._wait_briefly(proc)
            return
        _keepalive(kept)  # a client whose machine vanished shows in TCP_INFO within a minute or so
        worker = DirectWorker(direct_id, proc, kept, session.peer, report=report)
        if refs_w >= 0:
            worker.refs = RefPipe(self.loop, refs_w, proc.pid)
            worker.refs.sync(self.server.refs)  # every ref held now; later changes by `sync_refs`
        self.workers[direct_id] = worker
        self.started += 1
        self._watch_exit(worker)
        if report >= 0:
            self.loop.add_reader(report, lambda: self._read_report(worker), lambda exc: self._end_report(
                worker, "internal error (see the log above)"))  # fmt: skip
        if self._timer is None:
            self._timer = self.loop.call_later(WATCH_INTERVAL, self._watch, self._watch_failed)
        how = "exec'd" if isinstance(proc, subprocess.Popen) else "forked by the fork server"
        log.info("client %s: direct worker pid %d serves this connection (%s; %d of %d in use)", session.peer,
                 proc.pid, how, len(self.workers), self.limit)  # fmt: skip

    def _answer_failed(self, session: Session) -> None:
        """A bug while answering (the loop logged it): that session closes, nothing else."""
        if not session.closed:
            session.end(f"{REFUSED}: internal error in the ppserver (see its log)")

    def _new_id(self) -> int:
        while True:
            direct_id = secrets.randbits(64)
            if direct_id and direct_id not in self.workers:
                return direct_id

    def sync_refs(self) -> None:
        """Pass on to each direct worker what changed in the ppserver's refs (`direct_refs`)."""
        book = self.server.refs
        for worker in self.workers.values():
            if worker.refs is not None:
                worker.refs.sync(book)

    # -- ending them -------------------------------------------------------------------------------------

    def end(self, direct_ids: tuple[int, ...], peer: str) -> None:
        """`EndDirect` from client `peer`: SIGKILL those direct workers (unknown ids are ignored)."""
        for direct_id in direct_ids:
            worker = self.workers.get(direct_id)
            if worker is None:
                log.debug("client %s ended direct worker %d, which is not (or no longer) running", peer,
                          direct_id)  # fmt: skip
            else:
                self.kill(worker, f"client {peer} ended it (EndDirect)")

    def kill(self, worker: DirectWorker, why: str) -> None:
        """SIGKILL `worker` now (it is reaped when it is gone), and close our end of its socket, so that the
        client sees EOF as soon as the process is gone."""
        if not worker.killed:
            worker.killed = why
            log.info("stopping direct worker pid %d of %s: %s", worker.pid, worker.peer, why)
            with contextlib.suppress(OSError):  # reaped already: nothing to kill
                worker.proc.send_signal(signal.SIGKILL)
        _close(worker)

    def close(self) -> None:
        """The ppserver stops: kill and reap every direct worker (waits up to `_CLOSE_GRACE` s in all)."""
        self._closed = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        workers = list(self.workers.values())
        for worker in workers:
            self.kill(worker, "the ppserver stops")
        deadline = time.monotonic() + _CLOSE_GRACE
        for worker in workers:
            try:
                worker.proc.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.warning("direct worker pid %d did not exit after SIGKILL", worker.pid)
            self._forget(worker)

    # -- watching them -----------------------------------------------------------------------------------

    def _watch_exit(self, worker: DirectWorker) -> None:
        try:
            worker.pidfd = os.pidfd_open(worker.pid)  # type: ignore[attr-defined,unused-ignore]
        except (AttributeError, OSError):
            return  # no pidfd here (not Linux, or too old): `_watch` polls it
        self.loop.add_reader(worker.pidfd, lambda: self._exited(worker), lambda exc: self._failed(worker))

    def _exited(self, worker: DirectWorker) -> None:
        code = worker.proc.poll()
        if code is None:
            if worker.pidfd >= 0:  # it has exited (its pidfd said so): a forked one's exit code comes from
                self._unwatch(worker)  # the fork server, which reaps it; polled until it has come
                self._poll_exit(worker, _EXIT_POLL)
            return
        self._forget(worker)
        if worker.killed:
            log.debug("direct worker pid %d of %s %s", worker.pid, worker.peer, describe_exit(code))
        elif code:
            log.warning("direct worker pid %d of %s %s", worker.pid, worker.peer, describe_exit(code))
        else:
            log.info("direct worker pid %d of %s exited: its client is done", worker.pid, worker.peer)

    def _forget(self, worker: DirectWorker) -> None:
        if self.workers.get(worker.direct_id) is worker:
            del self.workers[worker.direct_id]
        if worker.report >= 0:
            self._read_report(worker)  # its last report, written as it ended, may not have been read yet
            self._end_report(worker, "")
        self._unwatch(worker)
        if worker.refs is not None:
            worker.refs.close()
        _close(worker)

    def _failed(self, worker: DirectWorker) -> None:
        """A bug in one of `worker`'s callbacks (the loop logged it): that worker goes, nothing else."""
        self.kill(worker, "internal error in the ppserver (see its log)")
        self._unwatch(worker)  # its exit is polled from now on (`_watch`)

    def _unwatch(self, worker: DirectWorker) -> None:
        """Take `worker`'s pidfd out of the loop, and close it."""
        if worker.pidfd >= 0:
            self.loop.remove_reader(worker.pidfd)
            with contextlib.suppress(OSError):
                os.close(worker.pidfd)
            worker.pidfd = -1

    def _poll_exit(self, worker: DirectWorker, delay: float) -> None:
        """Poll `worker`, which has exited, in `delay` s, and again (twice as late each time, 0.1 s at most)
        until its exit code is known; `ServedProcess.poll` gives one within a second, whatever the fork
        server does."""

        def again() -> None:
            if self.workers.get(worker.direct_id) is worker:
                self._exited(worker)
                if self.workers.get(worker.direct_id) is worker:
                    self._poll_exit(worker, min(delay * 2, 0.1))

        self.loop.call_later(delay, again, lambda exc: self._failed(worker))

    def _watch(self) -> None:
        """Every WATCH_INTERVAL: reap those without a pidfd; kill those whose client closed its end."""
        self._timer = None
        for worker in list(self.workers.values()):
            try:
                if worker.pidfd < 0:
                    self._exited(worker)
                    if worker.direct_id not in self.workers:
                        continue
                if not worker.killed and _client_gone(worker):
                    self.kill(worker, "its client closed the connection: its running job is for nobody")
            except Exception as exc:  # noqa: BLE001 - one direct worker's trouble is its own
                self.loop.report(exc, f"watching direct worker pid {worker.pid}")
                self._failed(worker)
        if self.workers and not self._closed:
            self._timer = self.loop.call_later(WATCH_INTERVAL, self._watch, self._watch_failed)

    def _watch_failed(self, exc: BaseException) -> None:
        self._timer = None
        if self.workers and not self._closed:
            self._timer = self.loop.call_later(WATCH_INTERVAL, self._watch, self._watch_failed)

    # -- their counts -------------------------------------------------------------------------------------

    def _read_report(self, worker: DirectWorker) -> None:
        """`worker`'s report pipe is readable: count what its reports add (`counting.count_direct`); EOF
        ends the pipe quietly (the worker has exited), anything but reports ends it with a warning."""
        try:
            data = os.read(worker.report, _REPORTS_READ)
        except BlockingIOError:
            return
        except OSError as exc:
            self._end_report(worker, f"it cannot be read ({exc.strerror or exc})")
            return
        if not data:
            self._end_report(worker, "")
            return
        counts = count_direct(self.server.counters, worker.counts, data)
        if isinstance(counts, str):
            self._end_report(worker, f"it sent something that is not a report ({counts})")
        else:
            self.jobs_done += counts[0] - worker.counts[0]
            self.job_time += counts[2] - worker.counts[2]
            worker.counts = counts

    def _end_report(self, worker: DirectWorker, why: str) -> None:
        """Stop reading `worker`'s reports (`why`, if not "", is logged); the worker goes on serving."""
        fd, worker.report = worker.report, -1
        if fd < 0:
            return
        self.loop.remove_reader(fd)
        with contextlib.suppress(OSError):
            os.close(fd)
        if why:
            log.warning("direct worker pid %d of %s: its report pipe is closed, its jobs no longer counted "
                        "here: %s", worker.pid, worker.peer, why)  # fmt: skip

    def _wait_briefly(self, proc: WorkerProcess) -> None:
        """Reap a process killed before it was registered, off the I/O thread's way (polled)."""
        if proc.poll() is None and not self._closed:
            self.loop.call_later(0.1, lambda: self._wait_briefly(proc))

    # -- the status page (its own thread: it only reads) ---------------------------------------------------

    def figures(self) -> dict[str, Any]:
        """How many direct workers run, and for whom (`/status.json`'s "direct")."""
        now = time.monotonic()
        rows = [
            {"address": w.peer, "pid": w.pid, "started": w.started, "connected_for": now - w.since,
             "jobs_done": w.counts[0], "errors": w.counts[1]}
            for w in list(self.workers.values())
        ]  # fmt: skip
        by_client: dict[str, int] = {}
        for row in rows:
            host = str(row["address"]).rsplit(":", 1)[0]
            by_client[host] = by_client.get(host, 0) + 1
        return {"limit": self.limit, "running": len(rows), "started": self.started, "by_client": by_client,
                "workers": rows}  # fmt: skip


def _report_pipe() -> tuple[int, int]:
    """A direct worker's report pipe: (our read end, non-blocking; its write end), or (-1, -1) if the
    system has no descriptor left (the worker then serves without reporting)."""
    try:
        read, write = os.pipe()
    except OSError as exc:
        log.warning("no report pipe for a direct worker (%s): its jobs will not be counted here", exc)
        return -1, -1
    os.set_blocking(read, False)
    return read, write


def _close_fds(*fds: int) -> None:
    """Close the pipe ends among `fds` that are open (-1: none)."""
    for fd in fds:
        if fd >= 0:
            os.close(fd)


def _close(worker: DirectWorker) -> None:
    sock, worker.sock = worker.sock, None
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.close()


def _client_gone(worker: DirectWorker) -> bool:
    """Whether the client has closed its end of `worker`'s connection (or the connection broke): TCP_INFO's
    state is no longer ESTABLISHED (CLOSE_WAIT once the client's FIN arrived). False where it cannot tell."""
    sock = worker.sock
    option = getattr(socket, "TCP_INFO", None)
    if sock is None or option is None:
        return False
    try:
        info = sock.getsockopt(socket.IPPROTO_TCP, option, 8)
    except OSError:
        return False
    return bool(info) and info[0] != _TCP_ESTABLISHED


def _keepalive(sock: socket.socket) -> None:
    """TCP keepalive probes on a direct link (shared with the worker's descriptors: one socket), so that a
    client whose machine or network vanished without a FIN is noticed too (best effort)."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        for name, value in _KEEPALIVE:
            option = getattr(socket, name, None)
            if option is not None:
                sock.setsockopt(socket.IPPROTO_TCP, option, value)
