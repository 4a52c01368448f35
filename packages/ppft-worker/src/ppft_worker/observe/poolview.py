"""The local workers as the status page shows them: one row per worker process, from the pool's own records.

Read from the status page's thread while the I/O thread changes those records: each record is read with
single operations (a list copied in one C call, attributes read once), so a row may be a moment behind but
is never torn, and a worker that leaves while it is read is still shown or already gone, never an error.
The running time of a worker's current job is counted from the later of: the job's frame reaching an idle
worker, and the worker's last result (`PoolWorker.since`): exact for long jobs, which go one at a time.
RSS comes from `/proc/PID/statm` (None where there is no /proc). Function names are the client's: they are
bounded here, and shown as text by the page.

This module only reads.
"""

from __future__ import annotations

import os
import time
from typing import TYPE_CHECKING, Any

from ppft_protocol import printable

if TYPE_CHECKING:
    from ..pool import WorkerPool

__all__ = ["rss_bytes", "worker_rows"]

_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def rss_bytes(pid: int) -> int | None:
    """Resident memory of process `pid` in bytes; None when it cannot be read (gone, or no /proc)."""
    try:
        with open(f"/proc/{pid}/statm", "rb") as f:
            return int(f.read().split()[1]) * _PAGE
    except (OSError, ValueError, IndexError):
        return None


def worker_rows(pool: WorkerPool) -> list[dict[str, Any]]:
    """`[{"pid", "state", "jobs_done", "function", "running_for", "rss", "started_by"}, ...]`, by worker."""
    now = time.monotonic()
    rows = []
    for w in pool.worker_records():
        tasks = list(w.inflight.values())  # one C-level copy of the worker's jobs in flight
        if not w.ready:
            state = "starting"
        elif tasks:
            state = "busy"
        elif w.standing_by:
            state = "standby"  # a recycled worker's replacement, ready, waiting for it to leave
        else:
            state = "idle"
        current = tasks[0] if tasks else None
        rows.append(
            {
                "pid": w.pid,
                "state": state,
                "jobs_done": w.done,
                "function": printable(current.body.name, 200) if current is not None else None,
                "running_for": max(0.0, now - w.since) if current is not None else None,
                "rss": rss_bytes(w.pid),
                "started_by": w.method,
            }
        )
    return rows
