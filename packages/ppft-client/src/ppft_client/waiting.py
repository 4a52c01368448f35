"""`NodeWatch`: jobs that no node can run are never left waiting in silence, nor waiting for nothing.

Two situations, told apart by whether time can cure them:

* **Waiting.** Jobs are queued and no node can take them now (no local workers, every ppserver refused the
  connection, does not answer, is still connecting, or has no workers), but one may come: the jobs wait,
  and every `WAIT_REPORT_INTERVAL` seconds a warning says how many wait, for how long, and why, node by node:
  `3 job(s) waiting for 30 s: no usable node (127.0.0.1:35000: connection refused)`.
* **Refused.** There are no local workers, nothing is being discovered, and every node refused this client
  for a reason that retrying cannot cure by itself (`RemoteNode.permanent`: a wrong secret, a ppft 1.x
  server, no common protocol version). Then the queued jobs and every new one fail with `NoNodeError`, whose
  message names each node and its reason, until something changes: a node becomes usable (the refused
  ppservers are still tried every 60 s), a ppserver is added (`connect1`), or local workers come back
  (`set_ncpus`). A dask node, an auto-discovery in progress (`ppservers=("*",)`: no node yet is not a
  refusal) or any node that may still answer keeps jobs waiting instead.

The refusal is decided on events (`changed()`, called when a node fails, connects, is added or closed, and
when the number of local workers changes), so a job fails as soon as the last node refuses; the waiting is
watched by a timer that runs only while jobs are queued. Everything here runs on the I/O thread; nothing is
on the per-job path but one attribute read when jobs remain queued after a dispatch.
"""

from __future__ import annotations

import logging
import re
import time
from collections import deque
from collections.abc import Iterable, Sequence
from typing import Any, Protocol

from ppft_worker.pool import WorkerPool
from ppft_worker.runtime import Loop

from .errors import NoNodeError
from .nodes import Node

__all__ = ["WAIT_REPORT_INTERVAL", "NodeWatch", "Watched", "short_reason"]

log = logging.getLogger("ppft.scheduler")

WAIT_REPORT_INTERVAL = 30.0
"""Seconds between two warnings about jobs waiting with no usable node (read at each check: a test may
lower it)."""

_SHORT = re.compile(r" \(|: |; ")


def _kind(nodes: Sequence[object]) -> str:
    """What to call `nodes` together: "ppserver", "ssh node", or "node" when they are of several kinds."""
    kinds = {getattr(node, "kind", "ppserver") for node in nodes}
    return kinds.pop() if len(kinds) == 1 else "node"


def short_reason(reason: str) -> str:
    """The head of a node's reason, for a one-line summary: "connection refused", "wrong secret"."""
    return _SHORT.split(reason, maxsplit=1)[0] if reason else reason


class Watched(Protocol):
    """What the watch reads and does of its scheduler (`ppft_client.scheduler.Scheduler`)."""

    loop: Loop
    queue: deque[Any]  # the jobs waiting for a node
    pool: WorkerPool  # the local workers
    nodes: list[Node]  # besides the local pool
    discoveries: list[str]  # where auto-discovery may still find more nodes
    exiting: bool

    def prune_nodes(self) -> None: ...

    def fail_jobs(self, exc: BaseException, jobs: Iterable[Any]) -> None: ...


class NodeWatch:
    """The scheduler's watch over queued jobs that have no node (see the module's text)."""

    def __init__(self, scheduler: Watched) -> None:
        self._scheduler = scheduler
        self.refused = ""  # non-empty: every node refused for good; the `NoNodeError` message
        self.armed = False  # the waiting timer is set
        self._since: float | None = None  # jobs have been waiting with no usable node since then
        self._reports = 0

    # -- events (I/O thread) ---------------------------------------------------------------------------

    def changed(self) -> None:
        """A node failed, connected, came or went, or the local workers changed: decide again whether jobs
        must fail, and fail those queued if so."""
        scheduler = self._scheduler
        scheduler.prune_nodes()
        was = self.refused
        self.refused = self._refusal()
        if self.refused and not was:
            log.error(
                "no usable node: no local workers, and every %s refused this client for a reason that "
                "retrying will not cure; jobs fail with NoNodeError until that changes",
                _kind([node for node in scheduler.nodes if not node.closed]),
            )  # fmt: skip
        elif was and not self.refused:
            log.info("a node may run jobs again: new jobs wait for it instead of failing")
        if self.refused:
            self.fail_queued()

    def fail_queued(self) -> None:
        """Fail every queued job with `NoNodeError` (the jobs are taken one by one: submitters may append)."""
        queue = self._scheduler.queue
        jobs = []
        while queue:
            jobs.append(queue.popleft())
        if jobs:
            self._scheduler.fail_jobs(NoNodeError(self.refused), jobs)

    def arm(self) -> None:
        """Jobs stay queued after a dispatch: watch whether they have a node."""
        if not self.armed:
            self.armed = True
            self._scheduler.loop.call_later(self._tick_interval(), self._tick, self._tick_failed)

    # -- the timer -------------------------------------------------------------------------------------

    @staticmethod
    def _tick_interval() -> float:
        return max(0.01, min(1.0, WAIT_REPORT_INTERVAL / 10))

    def _tick(self) -> None:
        self.armed = False
        scheduler = self._scheduler
        if not scheduler.queue or scheduler.exiting:
            self._since = None
            return
        if self._usable():
            self._since = None
        else:
            now = time.monotonic()
            if self._since is None:
                self._since = now
                self._reports = 0
            elif now - self._since >= (self._reports + 1) * WAIT_REPORT_INTERVAL:
                self._reports += 1
                seconds = self._reports * WAIT_REPORT_INTERVAL
                waited = f"{seconds:.0f}" if seconds >= 10 else f"{seconds:.2g}"
                log.warning(
                    "%d job(s) waiting for %s s: no usable node (%s)",
                    len(scheduler.queue), waited, self.why_waiting(),
                )  # fmt: skip
        self.arm()

    def _tick_failed(self, exc: BaseException) -> None:
        self.armed = False  # the next dispatch that leaves jobs queued sets it again

    # -- state -----------------------------------------------------------------------------------------

    def _usable(self) -> bool:
        scheduler = self._scheduler
        pool = scheduler.pool
        if pool.workers > 0 and not pool.broken_reason:
            return True
        return any(node.ready for node in scheduler.nodes)

    def why_waiting(self) -> str:
        """Node by node, why none can take jobs: "127.0.0.1:35000: connection refused; ..."."""
        scheduler = self._scheduler
        parts = []
        pool = scheduler.pool
        if pool.broken_reason:
            parts.append(short_reason(pool.broken_reason))
        elif pool.size == 0 and not scheduler.nodes and not scheduler.discoveries:
            parts.append("no local workers (ncpus=0) and no ppserver")
        for node in scheduler.nodes:
            if node.closed or node.ready:
                continue
            status = getattr(node, "status", None)
            if status is None:
                status = getattr(node, "last_error", "") or "connecting"
            parts.append(f"{node.name}: {short_reason(status)}")
        for where in scheduler.discoveries:
            parts.append(f"auto-discovery on {where}: no usable ppserver found yet")
        return "; ".join(parts) or "no local workers"

    def _refusal(self) -> str:
        """The `NoNodeError` message if every way to run a job is closed for good, else ""."""
        scheduler = self._scheduler
        if scheduler.pool.size > 0 or scheduler.discoveries or scheduler.exiting:
            return ""
        nodes = [node for node in scheduler.nodes if not node.closed]
        if not nodes or not all(getattr(node, "permanent", False) for node in nodes):
            return ""
        lines = "".join(f"\n  {node.name}: {getattr(node, 'last_error', '')}" for node in nodes)
        kind = _kind(nodes)
        every = f"the {kind}" if len(nodes) == 1 else f"each of the {len(nodes)} {kind}s"
        return (
            f"no node can run the job: there are no local workers (ncpus=0), and {every} refused this "
            f"client for a reason that retrying will not cure:{lines}\n"
            f"Fix that (the refused {kind}s are tried again every 60 s), or give the Server local workers "
            "(set_ncpus)."
        )
