"""`Session`: one peer of a ppserver, from its first byte to its last: its handshake, then its role.

    accepted --> in its handshake (the HandshakeGate counts it) --Established--> a client, or a dial-in worker
    client:          FunctionBody, JobLimits, JobBatch, Cancel, Terminate, StatsRequest, WatchOutput,
                     EndDirect --> the NodeServer
                     or Attach, as its first message: the connection goes to a direct worker (`direct`)
    dial-in worker:  NodeInfo("worker") first (a Link is made),
                     then ResultBatch, LiveOutput, NodeInfo, StatsReply

What each role may send is in `peers`; anything else is a `PeerError`, and the NodeServer closes the session
with the reason. The session is the owner of its jobs (`ServedTask.owner`): `closed` says whether anyone
still wants their results, `send` delivers them. It never decides anything for other sessions.
"""

from __future__ import annotations

import socket
import time
from collections import deque
from typing import Protocol

from ppft_protocol import (
    Attach,
    Cancel,
    Connection,
    EndDirect,
    Established,
    Event,
    FunctionBody,
    JobBatch,
    JobLimits,
    LiveOutput,
    Message,
    NodeInfo,
    Put,
    PutRefused,
    Release,
    Result,
    ResultBatch,
    ResultRecords,
    Role,
    State,
    StatsReply,
    StatsRequest,
    Terminate,
    WatchOutput,
)
from ppft_protocol.batches import ForwardedResults
from ppft_worker.oob import plain_result, plain_results
from ppft_worker.pool import WorkerPool
from ppft_worker.runtime import BodyTable, Link, Loop, RefBook, Stream, Task, offer_aes_gcm

from .direct import DirectWorkers
from .fairqueue import FairQueue
from .gate import LogBudget
from .limits import ServerLimits
from .mixed import Owner, dialin_screen
from .peers import (
    WORKER_REFUSED,
    FunctionTable,
    PeerError,
    check_node_info,
    no_workers_admitted,
    not_for_role,
    short_reason,
)
from .refs import put_ref, release_refs
from .watch import Watchers

__all__ = ["Host", "Session"]


class Host(Owner, Protocol):
    """What a session reads and does of its ppserver (`ppft_server.node.NodeServer`)."""

    loop: Loop
    secret: bytes
    worker_secret: bytes | None
    accept_workers: bool
    handshake_timeout: float
    silence_timeout: float
    queue: FairQueue
    functions: FunctionTable
    refusals: LogBudget
    watchers: Watchers
    limits: ServerLimits  # Cancel, JobLimits and Terminate
    refs: RefBook  # clients' `put()` objects
    pool: WorkerPool
    links: list[Link]
    direct: DirectWorkers  # Attach and EndDirect

    def session_authenticated(self, session: Session, event: Established) -> None: ...

    def refuse(self, session: Session, reason: str) -> None: ...

    def session_closed(self, session: Session, reason: str) -> None: ...

    def accept_jobs(self, session: Session, batch: JobBatch) -> None: ...

    def worker_joined(self, session: Session, info: NodeInfo) -> None: ...

    def capacity_changed(self) -> None: ...

    def results(self, pairs: list[tuple[Task, Result]]) -> None: ...

    def stats_reply(self) -> StatsReply: ...


class Session:
    """One peer: in its handshake, then a client sending jobs or a dial-in worker offering to run them.

    It is the owner of its jobs (`ServedTask.owner`): `closed` says whether anyone still wants their
    results, `send` delivers them."""

    def __init__(self, server: Host, sock: socket.socket, peer: str, host: str, *, allow_plain: bool) -> None:
        self.server = server
        self.peer = peer
        self.host = host
        self.closed = False
        self.authenticated = False
        self.worker = False  # proved the workers secret, or a ppft 2.0 dial-in let in by --accept-workers
        self.counted = False  # counts as a connected client or worker (for -t and the statistics)
        self.bodies = BodyTable(f"client {peer}")  # checked against their digests, bounded on version 2
        self.body_bytes = 0
        self.lane: deque[Task] = deque()
        self.live: set[int] = set()  # the client's ids of its jobs here: queued or running, not answered yet
        self.limits: dict[int, float] = {}  # time limits (`JobLimits`) of jobs whose JobBatch is to come
        self.job_bytes = 64  # a running mean of its jobs' sizes, for the queued-bytes cap
        self.link: Link | None = None
        self.done = 0  # its jobs answered (the status page shows it)
        self.channel = ""  # "sealed with chacha20-poly1305", once authenticated
        self.since = time.monotonic()
        self.spoke = False  # sent a message since its handshake (Attach is refused after one)
        self.attaching = False  # sent Attach: it says nothing more until the answer
        self.starting = True  # the Stream below may fail at once (a peer that reset already)
        conn = Connection(
            Role.SERVER, server.secret, allow_plain=allow_plain, aes_gcm=offer_aes_gcm(),
            worker_secret=server.worker_secret,
        )  # fmt: skip
        self.stream = Stream(
            server.loop, sock, conn, peer=peer, on_event=self._event, on_close=self._closed,
            handshake_timeout=server.handshake_timeout, silence_timeout=server.silence_timeout,
        )  # fmt: skip
        self.starting = False

    # -- the owner of its jobs -------------------------------------------------------------------------

    def send(self, message: Message) -> None:
        if self.stream.conn.version < 2:  # a client of ppft 2.0.0: buffered values as plain pickles
            if message.__class__ is ResultRecords and message.buffered:
                message = plain_results(message)
            elif message.__class__ is ForwardedResults:  # values mapped from a worker's segment
                message = ForwardedResults(message.job_ids, tuple(map(plain_result, message.results)))
        self.stream.send(message)

    # -- what the handshake gate asks --------------------------------------------------------------------

    def progress(self) -> int:
        state = self.stream.conn.state
        return 0 if state is State.AWAIT_OPENING else 1 if state is State.AWAIT_HELLO else 2

    def poll(self) -> bool:
        self.stream.read_now()
        return not self.stream.closed and not self.authenticated

    def drop(self) -> None:
        self.closed = True
        self.stream.close(bye=False)
        self.server.session_closed(self, "")

    # -- events ----------------------------------------------------------------------------------------

    def _event(self, event: Event) -> None:
        server = self.server
        try:
            if isinstance(event, Established):
                self.authenticated = True
                server.session_authenticated(self, event)
                return
            if self.attaching:
                raise PeerError(
                    f"it sent {type(event).__name__} after Attach: a client sends nothing more on that "
                    f"connection until the answer (Attached, or Bye)"
                )
            if isinstance(event, Attach):
                self._attach()
            elif self.link is not None:
                self._as_worker(event)
            elif self.worker:
                self._joining(event)
            else:
                self._as_client(event)
            self.spoke = True
        except PeerError as exc:
            server.refuse(self, str(exc))

    def _attach(self) -> None:
        """Attach: this connection is to go to a direct worker, if it is a client's new one."""
        if self.worker or self.stream.conn.peer_worker:
            raise PeerError("a dial-in worker sent Attach: direct links are for clients")
        if self.spoke:
            raise PeerError(
                "Attach came after other messages: a client sends it as the first message of a new "
                "connection, never on one that carried anything else"
            )
        self.attaching = True
        self.stream.pause_reading()  # the answer decides who reads this socket next
        self.server.direct.attach(self)

    def end(self, bye: str) -> None:
        """Closed by this side after Attach: refused (`bye` says why), or handed over ("": the socket went to
        a direct worker, and nothing more is written on it)."""
        self.closed = True
        if bye:
            self.stream.close(bye)
        self.server.session_closed(self, "")

    def _as_client(self, event: Event) -> None:
        server = self.server
        if isinstance(event, JobBatch):
            server.accept_jobs(self, event)
        elif isinstance(event, FunctionBody):
            server.functions.add(self, event)
        elif isinstance(event, Cancel):
            server.limits.cancel(self, event.job_ids)
        elif isinstance(event, JobLimits):
            server.limits.received(self, event.limits)
        elif isinstance(event, Terminate):
            server.limits.terminate(self, event.job_ids)
        elif isinstance(event, StatsRequest):
            self.stream.send(server.stats_reply())
        elif isinstance(event, WatchOutput):
            server.watchers.watch(self, event.on)
        elif isinstance(event, EndDirect):
            server.direct.end(event.direct_ids, self.peer)
        elif isinstance(event, Put):
            put_ref(server, self, event)
        elif isinstance(event, Release):
            release_refs(server, self, event.ref_ids)
        elif isinstance(event, NodeInfo) and event.kind == "worker":
            if not server.accept_workers:
                raise PeerError(f"{WORKER_REFUSED}: {no_workers_admitted(server.worker_secret is not None)}")
            self.worker = True  # a ppft 2.0 dial-in worker, which proves no role: --accept-workers lets it in
            self._joining(event)
        elif isinstance(event, NodeInfo) and event.kind == "client":
            pass  # what it is: nothing to do with it
        else:
            raise PeerError(not_for_role(event, "client"))

    def _joining(self, event: Event) -> None:
        """A dial-in worker, before it said how many workers it brings."""
        if isinstance(event, NodeInfo) and event.kind == "worker":
            check_node_info(event)
            self.link = Link(f"dial-in {self.peer}", self.stream, event, on_results=self.server.results,
                             on_requeue=self.server.queue.requeue)  # fmt: skip
            self.link.screen = dialin_screen(self.server, self.link, self.peer, event)
            self.link.refs = self.server.refs
            self.server.worker_joined(self, event)
        elif isinstance(event, StatsRequest):
            self.stream.send(self.server.stats_reply())
        else:
            raise PeerError(f"{not_for_role(event, 'dial-in worker')} (it must first send its NodeInfo)")

    def _as_worker(self, event: Event) -> None:
        link = self.link
        assert link is not None
        if isinstance(event, NodeInfo):
            if event.kind != "worker":
                raise PeerError(not_for_role(event, "dial-in worker"))
            check_node_info(event)
            link.handle(event)
            self.server.capacity_changed()
        elif isinstance(event, (ResultBatch, StatsReply, LiveOutput, PutRefused)):
            link.handle(event)
        elif isinstance(event, StatsRequest):
            self.stream.send(self.server.stats_reply())
        else:
            raise PeerError(not_for_role(event, "dial-in worker"))

    def _closed(self, reason: str) -> None:
        self.closed = True
        if self.starting:  # never registered: only the refusal is noted
            self.server.refusals.note(f"refused connection from {self.peer}: {reason}", short_reason(reason))
            return
        self.server.session_closed(self, reason)
