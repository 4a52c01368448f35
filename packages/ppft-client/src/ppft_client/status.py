"""The client's side of the status page: its snapshot (`Server.status()`); `outcomes` counts how jobs ended.

    I/O thread and callback thread: Scheduler._finished --outcomes.count_finished--> scheduler.counters
    I/O thread: Scheduler._on_results --> counters.durations (once per result frame)
    any thread: client_status(server) --> the dict of /status.json (docs/cluster.md lists its fields)

Every job passes `Scheduler._finished` exactly once, under the scheduler's `done_lock`, which is where its
outcome is counted: one check per job in a loop that already visits each job, and a closer look only at the
jobs that did not return. The jobs are finished in that same hold of the lock, and `client_status` reads the
outcomes under it: a job whose result the caller has seen is counted in the status it asks for next.
`client_status` only reads, through the `Node` interface for every kind of node
(ppserver, dask, any other), and shows no secret, function source or argument.
"""

from __future__ import annotations

import os
import socket
import time
from typing import TYPE_CHECKING, Any

from ppft_worker.observe import worker_rows
from ppft_worker.segments import open_segments

from .nodes import Node
from .version import __version__

if TYPE_CHECKING:
    from .scheduler import Scheduler

__all__ = ["client_status", "node_row"]


def node_row(node: Node) -> dict[str, Any]:
    """One node as the status shows it, through the `Node` interface (`kind` and `status_page` if the node
    has them). Read from another thread than the node's: a node that changes meanwhile shows a moment's
    state, and one that cannot be read says so rather than failing the whole status."""
    row: dict[str, Any] = {
        "name": node.name,
        "kind": getattr(node, "kind", type(node).__name__),
        "state": "unknown",
        "reason": "",
        "workers": 0,
        "running": 0,
        "jobs_done": 0,
        "direct_links": 0,
        "page": getattr(node, "status_page", "") or None,
    }
    try:
        ready = node.ready
        state = "ready" if ready else "down" if node.last_error else "connecting"
        row["state"] = "closed" if node.closed else state
        row["reason"] = "" if ready else node.status
        row["workers"] = node.workers
        row["running"] = node.inflight
        row["jobs_done"] = node.jobs_done
        direct = getattr(node, "direct", None)  # a ppserver's direct worker links (`nodes.direct`)
        row["direct_links"] = len(direct.ready) if direct is not None else 0
    except (AttributeError, RuntimeError, TypeError):  # its connection changed under us: a moment's state
        pass
    return row


def client_status(scheduler: Scheduler, ncpus: int) -> dict[str, Any]:
    """The client's status, as `Server.status()` returns it and its page serves it."""
    counters = scheduler.counters
    now = time.time()
    pool = scheduler.pool
    nodes = [node_row(node) for node in list(scheduler.nodes)]
    running = pool.inflight + sum(row["running"] for row in nodes)
    uptime = now - counters.started
    with scheduler.done_lock:  # briefly: the I/O thread finishes and counts jobs under it
        tally = counters.tally.snapshot()
        rate = counters.rate.series(max(60, int(uptime)))
    return {
        "kind": "client",
        "name": f"{socket.gethostname()} pid {os.getpid()}",
        "version": __version__,
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "started": counters.started,
        "now": now,
        "uptime": uptime,
        "listen": None,
        "channel": "",
        "jobs": {**tally, "queued": len(scheduler.queue), "running": running},
        "rate": {"step": 1, "last": rate},
        "durations": counters.durations.snapshot(),
        "local_workers": ncpus,
        "workers": worker_rows(pool),
        "worker_restarts": pool.restarts,
        "shared_segments": dict(zip(("open", "bytes"), open_segments(), strict=True)),
        "dialin": [],
        "clients": [],
        "nodes": nodes,
        "refused": {},
        "failures": counters.failures.snapshot(),
    }
