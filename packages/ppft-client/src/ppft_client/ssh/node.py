"""`SshNode`: any machine you can ssh into, as one of the scheduler's nodes: `ssh://[user@]host[:port]`.

It is a `RemoteNode` (window, heartbeats, lost jobs run elsewhere, reconnection with backoff, statistics,
live output) whose connection is not a TCP socket to a ppserver but an `SshChannel`: the system `ssh` running
`PYTHON -m ppft_worker --stdio` on the remote machine, a pool of worker processes there behind that one
channel. Nothing listens on the remote machine, nothing stays running there after the client leaves, and no
secret is copied anywhere: each connection proves a fresh random secret that the client sent through the
channel itself (never on a command line).

What it changes in `RemoteNode`:

* connecting (`_connect`): a new `SshChannel` with a new secret; once the remote side is up (READY), the
  protocol runs over our end of the channel (`_start`), unsealed unless the entry says `seal=yes` (ssh
  encrypts and authenticates the channel already; the handshake still proves the secret);
* failing (`_closed`, `_channel_failed`): the reason is what `failures.explain` makes of ssh's exit
  status and message, and says whether retrying can cure it (`_is_permanent`): a refused key or host key, a
  missing python or ppft_worker, or a version mismatch is retried slowly and lets the scheduler fail jobs
  with NoNodeError when no other node can run them;
* leaving (`close`): the stream says Bye, our end closes, and ssh is given a few seconds to finish (the
  remote side exits when its stdin closes, stopping its workers), then killed.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from typing import Any

from ppft_worker.runtime import Link, Loop
from ppft_worker.stdio import SECRET_SIZE

from ..nodes import RemoteNode
from .channel import SshChannel
from .entries import SshTarget, ssh_command
from .failures import explain

__all__ = ["REQUEUE_AFTER", "SshNode", "add_ssh_nodes"]

log = logging.getLogger("ppft.remote")

REQUEUE_AFTER = 0.2
"""Seconds the jobs of a lost channel wait for ssh to exit (and so to say why) before they run elsewhere
anyway: ssh exits within milliseconds of a channel that closed, but not from a network that went silent."""


class SshNode(RemoteNode):
    """An ssh node, (re)connected by the scheduler's I/O thread."""

    kind = "ssh node"
    direct_links = False  # its transport is ssh's pipes: there is no port to reach a worker by
    handshake_timeout = 10.0  # counted once the remote side is up: ssh's login has its own deadline
    plain_note = "ssh encrypts the channel, both ends agreed"

    def __init__(
        self,
        loop: Loop,
        target: SshTarget,
        prefix: tuple[str, ...],
        *,
        on_results: Any,
        on_lost: Any,
        on_rerun: Any,
        silence_timeout: float = 10.0,
        on_change: Any = None,
        persistent: bool = True,
    ) -> None:
        super().__init__(
            loop, target.host, target.port or 22, b"-", persistent=persistent, on_results=on_results,
            on_lost=on_lost, on_rerun=on_rerun, silence_timeout=silence_timeout, seal=target.seal,
            on_change=on_change,
        )  # fmt: skip
        self.name = target.name
        self.target = target
        self.argv = ssh_command(prefix, target)
        self._channel: SshChannel | None = None  # the current connection's ssh, until it is explained
        self._permanent_failure = False

    # -- connecting ------------------------------------------------------------------------------------

    def _connect(self) -> None:
        self._timer = None
        if self.closed:
            return
        secret = os.urandom(SECRET_SIZE)

        def ready(sock: socket.socket) -> None:
            if channel is self._channel and not self.closed:
                self._start(sock, secret, offer_plain=not self._seal)

        def failed(reason: str, returncode: int | None, lines: list[str], was_ready: bool) -> None:
            if channel is self._channel:
                self._channel = None
                self._explained(explain(self.target, reason, returncode, lines, ready=was_ready))

        channel = SshChannel(self.loop, self.name, self.argv, secret, on_ready=ready, on_failed=failed)
        self._channel = channel
        channel.start()

    def _explained(self, outcome: tuple[str, bool]) -> None:
        reason, self._permanent_failure = outcome
        if self._stream is not None:
            super()._closed(reason)  # the protocol ran over the channel: its jobs run elsewhere
        else:
            self._sock = None
            self._failed(reason)

    def _closed(self, reason: str) -> None:
        """The stream over the channel ended: wait for ssh to say why (`SshChannel.finish`), then go on as a
        ppserver node does after a loss, with that reason. Jobs in flight wait REQUEUE_AFTER seconds at
        most for that: then they run elsewhere, and the reason follows when ssh has said it."""
        channel = self._channel
        if channel is None or channel.done:
            super()._closed(reason)
            return
        channel.finish(reason)
        link = self.link
        if not channel.done and link is not None and link.inflight:
            self.loop.call_later(REQUEUE_AFTER, lambda: self._requeue_lost(link, reason))

    def _requeue_lost(self, link: Link, reason: str) -> None:
        """ssh has not said yet why the channel ended: the jobs of `link` run elsewhere now."""
        if link is not self.link or self.closed:
            return  # explained (and handed back) already, or the client left
        tasks = link.take_inflight()
        if tasks:
            log.warning("lost %s %s with %d job(s) in flight: %s; they run elsewhere", self.kind, self.name,
                        len(tasks), reason)  # fmt: skip
            self._on_lost(tasks, self.name, reason)

    def _is_permanent(self, reason: str) -> bool:
        return self._permanent_failure or super()._is_permanent(reason)

    def _why_sealed(self) -> str:
        return "the remote side did not agree to an unsealed channel"

    def _crashed(self, exc: BaseException) -> None:
        channel = self._channel
        self._channel = None
        if channel is not None:
            channel.close()
            channel.wait_closed(time.monotonic())
        super()._crashed(exc)

    # -- leaving ---------------------------------------------------------------------------------------

    def close(self) -> None:
        """Leave for good: Bye, our end of the channel closed; ssh is waited for by `wait_closed`."""
        super().close()
        channel = self._channel
        if channel is not None:
            channel.close()

    def wait_closed(self, deadline: float) -> None:
        """After `close`: wait until `deadline` (time.monotonic()) for ssh to finish (the remote side has
        stopped by then), then end it. The scheduler closes every node first, then waits for them all."""
        channel = self._channel
        self._channel = None
        if channel is not None:
            channel.wait_closed(deadline)

    @property
    def ssh_pid(self) -> int | None:
        """The pid of the current connection's ssh process (None while there is none)."""
        channel = self._channel
        return channel.proc.pid if channel is not None and channel.proc is not None else None


def add_ssh_nodes(
    scheduler: Any, targets: list[SshTarget], prefix: tuple[str, ...], *, persistent: bool = True
) -> None:
    """Add an `SshNode` per target to a `Scheduler` (from any thread), on the scheduler's own paths for
    results (`_on_results`), lost jobs (`_node_lost`: a job lost with its nodes too often fails) and changes
    (`watch.changed`), with live output when the scheduler shows it."""
    for target in targets:

        def make(target: SshTarget = target) -> SshNode:
            node = SshNode(
                scheduler.loop, target, prefix, on_results=scheduler._on_results,
                on_lost=scheduler._node_lost, on_rerun=scheduler._requeue,
                silence_timeout=scheduler.silence_timeout, on_change=scheduler.watch.changed,
                persistent=persistent,
            )  # fmt: skip
            if scheduler.live is not None:
                node.watch_output(scheduler.live.pieces_from(node.name))
            return node

        scheduler.add_node(target.name, make)
