"""ppserver's side of the status page: its snapshot for the page (`counting` counts per result frame).

    I/O thread: raw_results / results --counting.count_raw / count_results--> server.counters
    status page thread: server_status(server) --> the dict of /status.json (docs/cluster.md lists its fields)

Counting costs the I/O thread a few operations per result frame: the frame's failure count comes from the
decoder (`RawResults.failures`), so a frame of successes is counted with one add; only a frame that holds a
failure is looked at result by result, to tell an error from a job cancelled because its client left.
Direct workers (`direct`) are listed with their clients' addresses and the jobs they reported; those jobs are
in `jobs`, `rate` and `durations` too (`DirectWorkers`, `counting.count_direct`). `server_status` runs on the
status page's thread and only reads (`ppft_worker.observe.poolview` says how); it never shows a secret, a
function's source or an argument: function names and peer addresses only.
"""

from __future__ import annotations

import os
import socket
import time
from typing import TYPE_CHECKING, Any

from ppft_protocol import printable
from ppft_worker.observe import worker_rows
from ppft_worker.segments import open_segments

from .refs import ref_figures
from .version import __version__

if TYPE_CHECKING:
    from .node import NodeServer

__all__ = ["server_status"]


def server_status(server: NodeServer) -> dict[str, Any]:
    """The ppserver's status, as `/status.json` serves it (docs/cluster.md, "The status page")."""
    counters = server.counters
    now = time.time()
    monotonic = time.monotonic()
    sessions = list(server.sessions)
    clients = []
    dialin = []
    queued_total = 0
    for session in sessions:
        queued_total += len(session.lane)  # the FairQueue's own count walks its lanes: not from here
        if not session.counted:
            continue
        if session.worker:
            link = session.link
            if link is None:
                continue
            dialin.append(
                {
                    "address": session.peer,
                    "workers": link.workers,
                    "running": len(link.inflight),
                    "jobs_done": link.jobs_done,
                    "channel": session.channel,
                    "connected_for": monotonic - session.since,
                }
            )
        else:
            queued = len(session.lane)
            clients.append(
                {
                    "address": session.peer,
                    "queued": queued,
                    "running": max(0, len(session.live) - queued),
                    "done": session.done,
                    "channel": session.channel,
                    "connected_for": monotonic - session.since,
                }
            )
    host, port = server.address[:2]
    listen = f"[{host}]:{port}" if ":" in str(host) else f"{host or '0.0.0.0'}:{port}"
    pool = server.pool
    running = pool.inflight + sum(len(link.inflight) for link in list(server.links))
    channel = "sealed; unsealed for loopback clients that ask" if server.allow_plain_loopback else "sealed"
    return {
        "kind": "ppserver",
        "name": printable(server.name, 200),
        "version": __version__,
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "started": counters.started,
        "now": now,
        "uptime": now - counters.started,
        "listen": listen,
        "channel": channel,
        "jobs": {**counters.tally.snapshot(), "queued": queued_total, "running": running},
        "rate": {"step": 1, "last": counters.rate.series(max(60, int(now - counters.started)))},
        "durations": counters.durations.snapshot(),
        "workers": worker_rows(pool),
        "worker_restarts": pool.restarts,
        "dialin": dialin,
        "clients": clients,
        "direct": server.direct.figures(),
        "nodes": [],
        "refused": dict(counters.refused),
        "failures": counters.failures.snapshot(),
        "refs": ref_figures(server),
        "shared_segments": dict(zip(("open", "bytes"), open_segments(), strict=True)),
    }
