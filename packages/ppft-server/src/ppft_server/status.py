"""ppserver's side of the status page: what it counts per result frame, and its snapshot for the page.

    I/O thread: raw_results / results --count_raw / count_results--> server.counters (ppft_worker.observe)
    status page thread: server_status(server) --> the dict of /status.json (docs/cluster.md lists its fields)

Counting costs the I/O thread a few operations per result frame: the frame's failure count comes from the
decoder (`RawResults.failures`), so a frame of successes is counted with one add; only a frame that holds a
failure is looked at result by result, to tell an error from a job cancelled because its client left.
`server_status` runs on the status page's thread and only reads (`ppft_worker.observe.poolview` says how);
it never shows a secret, a function's source or an argument: function names and peer addresses only.
"""

from __future__ import annotations

import os
import socket
import time
from typing import TYPE_CHECKING, Any, cast

from ppft_protocol import Result, printable
from ppft_protocol.relay import RawResults
from ppft_worker.intake import ServedTask
from ppft_worker.observe import Counters, outcome_of, worker_rows
from ppft_worker.tasks import Task

from .version import __version__

if TYPE_CHECKING:
    from .node import NodeServer

__all__ = ["count_raw", "count_results", "server_status"]

_OK_BIT = 0x01  # a result's status byte: the job returned


def count_raw(counters: Counters, batch: RawResults, tasks: list[Task | None]) -> None:
    """Count a local worker's result frame passed on undecoded (`tasks[i]` None: no longer in flight)."""
    dropped = tasks.count(None)
    walls = batch.wall_times
    if dropped:
        walls = tuple([wall for task, wall in zip(tasks, walls, strict=True) if task is not None])
    if not batch.failures:
        counters.ended(len(tasks) - dropped)
    else:
        ok = error = cancelled = 0
        body = batch.body
        for task, start in zip(tasks, batch.starts, strict=True):
            if task is None:
                continue
            if body[start + 8] & _OK_BIT:
                ok += 1
            elif cast("ServedTask", task).owner.closed:
                cancelled += 1  # stopped (Cancel) because its client left
            else:
                error += 1
        counters.ended(ok, error)
        if cancelled:
            counters.tally.cancelled += cancelled
            counters.rate.add(cancelled)
    counters.durations.add(walls, sum(walls))


def count_results(counters: Counters, pairs: list[tuple[Task, Result]]) -> None:
    """Count decoded results: a dial-in worker's frame, or jobs the pool failed (lost with their worker)."""
    walls = [result[4] for _, result in pairs]
    failed = [result for _, result in pairs if not result[1]]
    if not failed:
        counters.ended(len(pairs))
    else:
        tally = counters.tally
        tally.ok += len(pairs) - len(failed)
        for result in failed:
            outcome = outcome_of(result.error_type)
            setattr(tally, outcome, getattr(tally, outcome) + 1)
        counters.rate.add(len(pairs))
    counters.durations.add(walls, sum(walls))


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
        "nodes": [],
        "refused": dict(counters.refused),
        "failures": counters.failures.snapshot(),
    }
