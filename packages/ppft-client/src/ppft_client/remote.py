"""`RemoteNode`: a ppserver as one of the scheduler's nodes.

It connects without blocking the I/O thread, authenticates, and once the server has said how many workers it
has, dispatches through a `Link`. A node that cannot be used is never silent: the first failure is logged as a
warning naming the node and the reason (refused, unreachable, no answer, wrong secret, protocol mismatch,
legacy ppft 1.x server), and the node is left out of `get_active_nodes()`. A node that drops hands its
in-flight jobs back to the scheduler at once, to run elsewhere; a persistent node is reconnected with
backoff (0.5 s doubling to 10 s; 60 s after a wrong secret, a legacy or an incompatible server) and takes
work again when it returns. A job lost with its node is requeued; lost three times, it fails with
`NodeLostError`.

The channel is sealed unless the client was made with `seal=False`, the connected socket's peer address is a
loopback address and the ppserver grants it (`--allow-plain-loopback`): an unsealed link is never offered to
anything but this machine, whatever name the node was given.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import socket
from collections.abc import Callable

from ppft_protocol import Connection, Established, Event, NodeInfo, Result, Role
from ppft_worker.addresses import is_loopback
from ppft_worker.cpufeatures import offer_aes_gcm
from ppft_worker.link import Link
from ppft_worker.loop import Loop, Timer
from ppft_worker.stream import Stream
from ppft_worker.tasks import Task, TaskQueue

from .version import __version__

__all__ = ["RemoteNode"]

log = logging.getLogger("ppft.remote")

_CONNECT_TIMEOUT = 5.0
_MAX_BACKOFF = 10.0
_REFUSED_BACKOFF = 60.0
_PERMANENT = ("wrong secret", "legacy ppft 1.x peer", "protocol mismatch")

_CONNECT_ERRORS = {
    errno.ECONNREFUSED: "connection refused (is ppserver running there, on that port?)",
    errno.EHOSTUNREACH: "host unreachable",
    errno.ENETUNREACH: "network unreachable",
    errno.ETIMEDOUT: "connection timed out",
}


class RemoteNode:
    """A link to one ppserver at `host:port`, (re)connected by the scheduler's I/O thread."""

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
        silence_timeout: float = 10.0,
        seal: bool = True,
    ) -> None:
        """`seal=False`: offer an unsealed channel when the connected peer is on this machine."""
        self.loop = loop
        self.host = host
        self.port = port
        self.name = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        self.persistent = persistent
        self.link: Link | None = None
        self.last_error = ""
        self.closed = False
        self._secret = secret
        self._seal = seal
        self._established: Established | None = None  # of the current connection, once its handshake is done
        self._on_results = on_results
        self._on_lost = on_lost
        self._silence_timeout = silence_timeout
        self._stream: Stream | None = None
        self._sock: socket.socket | None = None
        self._timer: Timer | None = None
        self._backoff = 0.5
        self._done_before = 0  # jobs and job time of earlier connections, for the statistics
        self._time_before = 0.0

    # -- node interface --------------------------------------------------------------------------------

    @property
    def ready(self) -> bool:
        return self.link is not None and self.link.ready

    @property
    def workers(self) -> int:
        return self.link.workers if self.link is not None and self.link.ready else 0

    @property
    def jobs_done(self) -> int:
        return self._done_before + (self.link.jobs_done if self.link is not None else 0)

    @property
    def job_time(self) -> float:
        return self._time_before + (self.link.job_time if self.link is not None else 0.0)

    @property
    def sealed(self) -> bool | None:
        """Whether the current connection's channel is sealed; None while the node is not connected."""
        return self._established.sealed if self._established is not None else None

    @property
    def cipher(self) -> str:
        """The current connection's cipher ("aes-256-gcm" or "chacha20-poly1305"); "" when unsealed or not
        connected. AES-256-GCM when both ends have AES hardware (ppft_worker.cpufeatures)."""
        return self._established.cipher if self._established is not None else ""

    @property
    def inflight(self) -> int:
        return len(self.link.inflight) if self.link is not None else 0

    def dispatch(self, queue: TaskQueue) -> int:
        return self.link.dispatch(queue) if self.link is not None else 0

    def take_inflight(self) -> list[Task]:
        return self.link.take_inflight() if self.link is not None else []

    def start(self) -> None:
        self._connect()

    def close(self) -> None:
        """Leave for good (the client is done): the server is told, nothing is reconnected."""
        self.closed = True
        if self._timer is not None:
            self._timer.cancel()
        if self._stream is not None:
            self._stream.close("the client is done: destroy() or the end of its program")
        elif self._sock is not None:
            self._drop_socket()

    # -- connecting ------------------------------------------------------------------------------------

    def _connect(self) -> None:
        self._timer = None
        if self.closed:
            return
        try:
            infos = socket.getaddrinfo(self.host, self.port, type=socket.SOCK_STREAM)
        except socket.gaierror as exc:
            self._failed(f"cannot resolve host {self.host!r} ({exc.strerror})")
            return
        family, kind, proto, _, address = infos[0]
        sock = socket.socket(family, kind, proto)
        sock.setblocking(False)
        self._sock = sock
        err = sock.connect_ex(address)
        if err not in (0, errno.EINPROGRESS):
            self._drop_socket()
            self._failed(_CONNECT_ERRORS.get(err, os.strerror(err)))
            return
        self.loop.add_writer(sock.fileno(), self._connected)
        self._timer = self.loop.call_later(_CONNECT_TIMEOUT, self._connect_timeout)

    def _connect_timeout(self) -> None:
        self._timer = None
        if self._sock is not None and self._stream is None:
            self._drop_socket()
            self._failed(f"no answer within {_CONNECT_TIMEOUT:.0f} s (host down, or a firewall drops it)")

    def _connected(self) -> None:
        sock = self._sock
        if sock is None:
            return
        self.loop.remove_writer(sock.fileno())
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        err = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if err:
            self._drop_socket()
            self._failed(_CONNECT_ERRORS.get(err, os.strerror(err)))
            return
        offer = not self._seal and _is_loopback(sock)
        conn = Connection(
            Role.CLIENT, self._secret, allow_plain=offer, aes_gcm=offer_aes_gcm(),
            comment=f"ppft {__version__} client",
        )  # fmt: skip
        self._stream = Stream(
            self.loop, sock, conn, peer=f"ppserver {self.name}", on_event=self._event, on_close=self._closed,
            silence_timeout=self._silence_timeout,
        )  # fmt: skip

    def _drop_socket(self) -> None:
        sock = self._sock
        self._sock = None
        if sock is not None:
            self.loop.remove_writer(sock.fileno())
            with contextlib.suppress(OSError):
                sock.close()

    # -- connected -------------------------------------------------------------------------------------

    def _event(self, event: Event) -> None:
        if isinstance(event, Established):
            self._established = event
            if not event.sealed:
                log.info("link to %s unsealed: loopback, both ends agreed", self.name)
            elif not self._seal:
                log.info("link to %s sealed: %s", self.name, self._why_sealed())
            return
        if self.link is None:
            if isinstance(event, NodeInfo):
                assert self._stream is not None
                self.link = Link(self.name, self._stream, event, on_results=self._results)
                if self.last_error:
                    log.warning("ppserver %s is back with %d worker(s)", self.name, event.workers)
                else:
                    how = f"sealed with {self.cipher}" if self.sealed else "unsealed"
                    log.info("connected to ppserver %s (%d workers, %s)", self.name, event.workers, how)
                self.last_error = ""
                self._backoff = 0.5
                self.loop.wake()
            return
        self.link.handle(event)

    def _results(self, pairs: list[tuple[Task, Result]]) -> None:
        self._on_results(pairs, self.name)

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
        if tasks:
            log.warning("lost ppserver %s with %d job(s) in flight: %s; they run elsewhere", self.name,
                        len(tasks), reason)  # fmt: skip
            self._on_lost(tasks, self.name, reason)
        self._failed(reason, quiet=bool(tasks))

    def _failed(self, reason: str, *, quiet: bool = False) -> None:
        if self.closed:
            return
        if reason != self.last_error and not quiet:
            log.warning("ppserver %s cannot be used: %s", self.name, reason)
        self.last_error = reason
        if self.persistent:
            # A refusal that retrying cannot cure by itself (the secret, the software) is retried slowly.
            delay = _REFUSED_BACKOFF if reason.startswith(_PERMANENT) else self._backoff
            self._timer = self.loop.call_later(delay, self._connect)
            self._backoff = min(_MAX_BACKOFF, self._backoff * 2)
        else:
            self.closed = True


def _is_loopback(sock: socket.socket) -> bool:
    """Whether `sock` is connected to a loopback address: the address the kernel connected to, not the name
    the node was given."""
    try:
        return is_loopback(str(sock.getpeername()[0]))
    except (OSError, IndexError):
        return False
