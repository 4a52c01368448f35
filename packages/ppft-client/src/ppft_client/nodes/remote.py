"""`RemoteNode`: a ppserver as one of the scheduler's nodes.

It connects without blocking the I/O thread (`ppft_worker.runtime.dialer`: the name resolved by resolver
threads, every address tried in turn), authenticates, and once the server has said how many workers it has,
dispatches through a `Link`. A node that cannot be used is never silent: the first failure is logged as a
warning naming the node and the reason (refused, unreachable, no answer, wrong secret, protocol mismatch,
legacy ppft 1.x server), and the node is left out of `get_active_nodes()`. A node that drops hands its
in-flight jobs back to the scheduler at once, to run elsewhere; a persistent node is reconnected with backoff
(0.5 s doubling to 10 s; 60 s after a wrong secret, a legacy or an incompatible server) and takes work again
when it returns. A job lost with its node is requeued; lost three times, it fails with `NodeLostError`. A
refusal that retrying cannot cure by itself (`permanent`) is what lets the scheduler fail jobs with
`NoNodeError` instead of letting them wait.

A node found by auto-discovery (`candidate`) is only an address a datagram suggested: it is forgotten (closed,
and the discovery told) when it never completed a handshake, or when it has been unreachable for
`FORGET_AFTER` seconds; the next announcement may suggest it again. Its failures to connect are logged at
INFO only (anyone can send a datagram); a refusal in the handshake (a real ppft peer) is a warning, once.

A bug in any of the node's callbacks (connecting, its stream, dispatching, results) closes this node's
connection only: its jobs run elsewhere as for a lost node, and it reconnects as after a loss.

With live output (`watch_output`), the node asks the ppserver for what its jobs write as they write it
(`WatchOutput`, protocol version 2) on every connection; a ppserver that speaks only version 1 (ppft 2.0.0)
cannot, which is logged once: its jobs' output then shows when they end, stdout and stderr as one text.

The channel is sealed unless the client was made with `seal=False`, the connected socket's peer address is a
loopback address and the ppserver grants it (`--allow-plain-loopback`): an unsealed link is never offered to
anything but this machine, whatever name the node was given.

An ssh node (`ssh.node.SshNode`) is this same node over another transport: it overrides how a connection is
opened (`_connect`, then `_start` with a connected socket), how a failure is explained (`_closed`,
`_is_permanent`), and the words that name it in log lines (`kind`).
"""

from __future__ import annotations

import contextlib
import logging
import socket
import time
from collections.abc import Callable
from typing import Protocol

from ppft_protocol import Connection, EndDirect, Established, Event, NodeInfo, Result, Role, WatchOutput
from ppft_worker.observe import page_link
from ppft_worker.runtime import (
    CONNECT_TIMEOUT,
    Dial,
    Link,
    Loop,
    RefBook,
    Stream,
    Task,
    TaskQueue,
    Timer,
    internal_error_reason,
    is_loopback,
    offer_aes_gcm,
)

from ..pythons import foreign_python_screen, refused_result
from ..refs import inline_screen
from ..version import __version__
from .direct import DirectLinks

__all__ = ["FORGET_AFTER", "Candidate", "RemoteNode"]

log = logging.getLogger("ppft.remote")

_MAX_BACKOFF = 10.0
_REFUSED_BACKOFF = 60.0
_PERMANENT = ("wrong secret", "legacy ppft 1.x peer", "protocol mismatch")
FORGET_AFTER = 60.0
"""Seconds a discovered node may stay unreachable before it is forgotten (if it ever answered)."""
_CONNECT_TIMEOUT = CONNECT_TIMEOUT


class Candidate(Protocol):
    """What a node found by auto-discovery reports to the discovery that suggested it."""

    last_error: str  # the reason this address failed last time it was suggested ("" if never)

    def answered(self) -> None:
        """The handshake succeeded: the address is a ppserver that knows our secret."""
        ...

    def forget(self, reason: str) -> None:
        """The node is closed for good; the address may be suggested again later."""
        ...


class RemoteNode:
    """A link to one ppserver at `host:port`, (re)connected by the scheduler's I/O thread."""

    kind = "ppserver"
    """What log lines call this kind of node."""
    handshake_timeout = 5.0
    """Seconds the peer has to complete its handshake once connected."""
    plain_note = "loopback, both ends agreed"
    """Why an unsealed link is fine, for the log line that says it is unsealed."""
    direct_links = True
    """Whether this kind of node asks for direct worker links (`nodes.direct`): a ppserver over TCP does."""

    def __init__(
        self,
        loop: Loop,
        host: str,
        port: int,
        secret: bytes,
        *,
        persistent: bool,
        on_results: Callable[[list[tuple[Task, Result]], str], None],
        on_lost: Callable[[list[Task], str, str], None],
        on_rerun: Callable[[list[Task]], None],
        silence_timeout: float = 10.0,
        seal: bool = True,
        candidate: Candidate | None = None,
        on_change: Callable[[], None] | None = None,
    ) -> None:
        """`seal=False`: offer an unsealed channel when the connected peer is on this machine.
        `candidate`: the node was suggested by auto-discovery (see the module's text). `on_change()`: called
        whenever the node becomes usable, fails, or closes. `on_rerun(tasks)`: jobs a direct worker link held
        as it ended, queued again uncharged (`nodes.direct`); `on_lost` charges a loss of the node."""
        self.loop = loop
        self.host = host
        self.port = port
        self.name = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        self.persistent = persistent
        self.link: Link | None = None
        self.refs: RefBook | None = None  # the client's `put()` refs: each link is sent them
        self.last_error = candidate.last_error if candidate is not None else ""
        self.permanent = False  # the last failure is one that retrying cannot cure by itself
        self.closed = False
        self.candidate = candidate
        self._secret = secret
        self._seal = seal
        self._established: Established | None = None  # of the current connection, once its handshake is done
        self._on_results = on_results
        self._on_lost = on_lost
        self._on_change = on_change
        self._silence_timeout = silence_timeout
        self._dial: Dial | None = None
        self._stream: Stream | None = None
        self._sock: socket.socket | None = None
        self._timer: Timer | None = None
        self._backoff = 0.5
        self._answered = False  # a handshake succeeded once
        self._down_since: float | None = time.monotonic()  # not connected since then
        self._done_before = 0  # jobs and job time of earlier connections, for the statistics
        self._time_before = 0.0
        self._on_output: Callable[[list[tuple[Task, int, int, str]]], None] | None = None
        self._v1_logged = False
        self.direct = DirectLinks(
            loop, self.name, secret, on_results=self._results, on_requeue=self._given_back,
            on_rerun=on_rerun, send_control=self._send_control,
        )  # fmt: skip

    # -- node interface --------------------------------------------------------------------------------

    @property
    def ready(self) -> bool:
        return self.link is not None and self.link.ready

    @property
    def workers(self) -> int:
        return self.link.workers if self.link is not None and self.link.ready else 0

    @property
    def jobs_done(self) -> int:
        done = self._done_before + self.direct.jobs_done
        return done + (self.link.jobs_done if self.link is not None else 0)

    @property
    def job_time(self) -> float:
        spent = self._time_before + self.direct.job_time
        return spent + (self.link.job_time if self.link is not None else 0.0)

    @property
    def sealed(self) -> bool | None:
        """Whether the current connection's channel is sealed; None while the node is not connected."""
        return self._established.sealed if self._established is not None else None

    @property
    def cipher(self) -> str:
        """The current connection's cipher ("aes-256-gcm" or "chacha20-poly1305"); "" when unsealed or not
        connected. AES-256-GCM when both ends have AES hardware (ppft_worker.runtime.cpufeatures)."""
        return self._established.cipher if self._established is not None else ""

    @property
    def inflight(self) -> int:
        return (len(self.link.inflight) if self.link is not None else 0) + self.direct.inflight

    @property
    def status_page(self) -> str:
        """The ppserver's status page as it announced it (protocol version 2, `ppserver --http`), under the
        address this client reached it by when it listens on every address; "" when it serves none."""
        link = self.link
        return page_link(link.info.page, self.host) if link is not None else ""

    @property
    def status(self) -> str:
        """Why the node takes no jobs now, in a few words ("" when it does)."""
        if self.ready:
            return ""
        if self.link is not None:
            return "connected, but it has no workers"
        return self.last_error or "connecting"

    def dispatch(self, queue: TaskQueue) -> int:
        """Jobs to the direct links first, those that may go there; the others to the ppserver (`direct`)."""
        return self.direct.dispatch(queue, self.link) if self.link is not None else 0

    def sync_refs(self) -> None:
        """Send the connected peer the `put()` refs it lacks, and the releases, now."""
        if self.link is not None:
            self.link.refs = self.refs
            self.link.sync_refs()

    def terminate(self, task: Task) -> bool:
        if self.link is not None and self.link.terminate(task):
            return True
        return self.direct.terminate(task)

    def take_inflight(self) -> list[Task]:
        tasks = self.link.take_inflight() if self.link is not None else []
        return tasks + self.direct.take_inflight()

    def start(self) -> None:
        self._connect()

    def watch_output(self, on_output: Callable[[list[tuple[Task, int, int, str]]], None]) -> None:
        """Ask the ppserver for live output on every connection (before `start`); pieces go to
        `on_output` as `(task, stream, offset, text)`."""
        self._on_output = on_output

    def close(self) -> None:
        """Leave for good (the client is done): the server is told, nothing is reconnected."""
        self.closed = True
        self.direct.close("the client is done: destroy() or the end of its program")
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._dial is not None:
            self._dial.cancel()
            self._dial = None
        if self._stream is not None:
            self._stream.close("the client is done: destroy() or the end of its program")
        elif self._sock is not None:
            self._drop_socket()

    def internal_error(self, exc: BaseException, what: str) -> None:
        """A bug while the scheduler used this node (`what`): log it once, drop the connection (its jobs run
        elsewhere, as for a lost node) and reconnect as after a loss."""
        stream = self._stream
        if stream is not None and not stream.closed:
            stream.fail(exc, what)  # its end is reported to `_closed`, on the loop's next round
            return
        self.loop.report(exc, f"{what} failed")
        tasks = self.take_inflight()
        self.link = None
        self.direct.close("the client dropped its link to the ppserver")
        if tasks:
            self._on_lost(tasks, self.name, internal_error_reason(exc))
        self._crashed(exc)

    # -- connecting ------------------------------------------------------------------------------------

    def _connect(self) -> None:
        self._timer = None
        if self.closed:
            return
        self._dial = Dial(self.loop, self.host, self.port, self._dialled, timeout=_CONNECT_TIMEOUT)
        self._dial.start()

    def _dialled(self, sock: socket.socket | None, reason: str) -> None:
        self._dial = None
        if sock is None:
            self._failed(reason)
            return
        if self.closed:
            sock.close()
            return
        self._sock = sock
        self._start(sock, self._secret, offer_plain=not self._seal and _is_loopback(sock))

    def _start(self, sock: socket.socket, secret: bytes, *, offer_plain: bool) -> None:
        """Speak the protocol over the connected `sock`, proving `secret`; `offer_plain`: agree to an
        unsealed channel if the peer does."""
        self._sock = sock
        conn = Connection(
            Role.CLIENT, secret, allow_plain=offer_plain, aes_gcm=offer_aes_gcm(),
            comment=f"ppft {__version__} client",
        )  # fmt: skip
        self._stream = Stream(
            self.loop, sock, conn, peer=f"{self.kind} {self.name}", on_event=self._event,
            on_close=self._closed, handshake_timeout=self.handshake_timeout,
            silence_timeout=self._silence_timeout,
        )  # fmt: skip

    def _drop_socket(self) -> None:
        sock = self._sock
        self._sock = None
        if sock is not None:
            with contextlib.suppress(OSError, ValueError):
                self.loop.remove_writer(sock.fileno())
                self.loop.remove_reader(sock.fileno())
            with contextlib.suppress(OSError):
                sock.close()

    def _crashed(self, exc: BaseException) -> None:
        """The loop's error handler for the node's own callbacks (connecting, its reconnect timer): drop
        what was half made, and go on as after a failure."""
        self._timer = None
        if self._dial is not None:
            self._dial.cancel()
            self._dial = None
        if self._stream is None:
            self._drop_socket()
        self._failed(internal_error_reason(exc))

    # -- connected -------------------------------------------------------------------------------------

    def _event(self, event: Event) -> None:
        if isinstance(event, Established):
            self._established = event
            if not event.sealed:
                log.info("link to %s unsealed: %s", self.name, self.plain_note)
            elif not self._seal:
                log.info("link to %s sealed: %s", self.name, self._why_sealed())
            return
        if self.link is None:
            if isinstance(event, NodeInfo):
                assert self._stream is not None
                # logged before the link is set: a node seen ready (get_active_nodes) has said it is connected
                if self.last_error and (self._answered or self.candidate is None):
                    log.warning("%s %s is back with %d worker(s)", self.kind, self.name, event.workers)
                else:
                    how = f"sealed with {self.cipher}" if self.sealed else "unsealed"
                    log.info("connected to %s %s (%d workers, %s)", self.kind, self.name, event.workers, how)
                self.link = Link(self.name, self._stream, event, on_results=self._results,
                                 on_requeue=self._given_back)  # fmt: skip
                self._watch(self.link)
                self.link.screen = foreign_python_screen(self.name, event, self._refused)
                self.link.refs = self.refs
                if self._stream.conn.version < 2:  # it cannot hold refs: they travel inline in the jobs
                    self.link.screen = inline_screen(self.link.screen, lambda: self.refs)
                self.last_error = ""
                self.permanent = False
                self._backoff = 0.5
                self._answered = True
                self._down_since = None
                if self.candidate is not None:
                    self.candidate.answered()
                self._open_direct(event)
                self._changed()
                self.loop.wake()
            return
        self.link.handle(event)
        if isinstance(event, NodeInfo):
            self._changed()  # its worker count changed (dial-in workers came or went)

    def _open_direct(self, info: NodeInfo) -> None:
        """Ask for direct worker links (`nodes.direct`) when they can serve: not from an ssh node, not with
        live output (a direct worker cannot send it), not to a ppserver that does not run our bytecode."""
        link = self.link
        if self.direct_links and self._on_output is None and link is not None and link.screen is None:
            self.direct.open(self._sock, self._established, info.workers)

    def _send_control(self, message: EndDirect) -> bool:
        """Send `message` on the link to the ppserver; False if it is down."""
        stream = self._stream
        if stream is None or stream.closed or self._established is None:
            return False
        stream.send(message)
        return True

    def _watch(self, link: Link) -> None:
        """A new link: ask for live output (if watched); say once that a version-1 ppserver cannot."""
        established = self._established
        if established is None:
            return
        if established.version >= 2:
            if self._on_output is not None:
                link.on_output = self._on_output
                link.stream.send(WatchOutput(True))
            return
        if self._v1_logged:
            return
        self._v1_logged = True
        if self._on_output is not None:
            log.warning(
                "ppserver %s speaks protocol version 1 (ppft 2.0.0): live_output cannot show its jobs' "
                "output as they run, and their stderr arrives with their stdout; upgrade it to show both",
                self.name,
            )
        else:
            log.info(
                "ppserver %s speaks protocol version 1 (ppft 2.0.0): its jobs' stderr arrives with their "
                "stdout, on stdout; upgrade it to keep the two apart",
                self.name,
            )

    def _results(self, pairs: list[tuple[Task, Result]]) -> None:
        self._on_results(pairs, self.name)

    def _refused(self, tasks: list[Task], message: str) -> None:
        """Jobs whose function the ppserver's Python cannot run (`pythons`): they fail, saying why."""
        self._on_results([(task, refused_result(task, message)) for task in tasks], self.name)

    def _given_back(self, tasks: list[Task]) -> None:
        """Jobs the ppserver answered as cancelled though this client never asked: they run elsewhere, each
        counted as a loss of its node (so a ppserver that gives every job back cannot bounce one forever)."""
        self._on_lost(tasks, self.name, "the ppserver cancelled jobs it was not asked to cancel")

    def _why_sealed(self) -> str:
        sock = self._sock
        if sock is None or not _is_loopback(sock):
            return "not a loopback peer, so no unsealed link was offered"
        return "the ppserver did not agree to an unsealed link (start it with --allow-plain-loopback)"

    def _closed(self, reason: str) -> None:
        self._stream = None
        self._sock = None
        self._established = None
        link = self.link
        self.link = None
        tasks: list[Task] = []
        if link is not None:
            self._done_before += link.jobs_done
            self._time_before += link.job_time
            tasks = link.take_inflight()
            self._down_since = time.monotonic()
        tasks += self.direct.take_inflight()
        self.direct.close("the link to the ppserver was lost")
        if tasks:
            log.warning("lost %s %s with %d job(s) in flight: %s; they run elsewhere", self.kind, self.name,
                        len(tasks), reason)  # fmt: skip
            self._on_lost(tasks, self.name, reason)
        self._failed(reason, quiet=bool(tasks), answered=True)

    def _failed(self, reason: str, *, quiet: bool = False, answered: bool = False) -> None:
        """The node cannot be used (`reason`); `answered`: a TCP connection was made (so the reason comes
        from a peer that speaks, not from the network)."""
        if self.closed:
            return
        self.permanent = self._is_permanent(reason)
        if reason != self.last_error and not quiet:
            if self.candidate is not None and not (answered and self.permanent):
                log.info("auto-discovered ppserver %s cannot be used: %s", self.name, reason)
            else:
                log.warning("%s %s cannot be used: %s", self.kind, self.name, reason)
        self.last_error = reason
        if self.candidate is not None and self._forgotten():
            self.closed = True
            self.candidate.forget(reason)
        elif self.persistent:
            # A refusal that retrying cannot cure by itself (the secret, the software) is retried slowly.
            delay = _REFUSED_BACKOFF if self.permanent else self._backoff
            self._timer = self.loop.call_later(delay, self._connect, self._crashed)
            self._backoff = min(_MAX_BACKOFF, self._backoff * 2)
        else:
            self.closed = True
        self._changed()

    def _is_permanent(self, reason: str) -> bool:
        """Whether the failure `reason` is one that retrying cannot cure by itself."""
        return reason.startswith(_PERMANENT)

    def _forgotten(self) -> bool:
        """Whether a discovered node is given up: it never answered, or has not for `FORGET_AFTER` s."""
        if not self._answered:
            return True
        return self._down_since is not None and time.monotonic() - self._down_since >= FORGET_AFTER

    def _changed(self) -> None:
        if self._on_change is not None:
            self._on_change()


def _is_loopback(sock: socket.socket) -> bool:
    """Whether `sock` is connected to a loopback address: the address the kernel connected to, not the name
    the node was given."""
    try:
        return is_loopback(str(sock.getpeername()[0]))
    except (OSError, IndexError):
        return False
