"""`PoolWorker`: a `WorkerPool`'s record of one worker process, its pipes and what it has in flight.

Plain state, read and written by the pool (and its stealing decisions) on the I/O thread only; it holds no
logic, so that the pool's module keeps to the pool's decisions.
"""

from __future__ import annotations

import time

from ppft_protocol import READ_SIZE, BodyLedger, Connection

from ..runtime import OutBuffer, RefSync, Task
from .forkstart import WorkerProcess

TYPE_CHECKING = False
if TYPE_CHECKING:
    import mmap

__all__ = ["PoolWorker"]


class PoolWorker:
    """One worker process of a pool: its handle, pipe ends, protocol connection and jobs in flight."""

    __slots__ = (
        "bodies",
        "conn",
        "deadline",
        "done",
        "index",
        "inflight",
        "live",
        "method",
        "out",
        "pid",
        "proc",
        "read_size",
        "ready",
        "refs",
        "region",
        "retiring",
        "rfd",
        "sent",
        "since",
        "solo_busy",
        "spare",
        "standby",
        "started",
        "stolen",
        "wfd",
    )

    def __init__(
        self,
        index: int,
        proc: WorkerProcess,
        rfd: int,
        wfd: int,
        conn: Connection,
        method: str,
        region: mmap.mmap | None = None,
    ) -> None:
        self.index = index
        self.proc = proc
        self.pid = proc.pid
        self.conn = conn
        self.rfd = rfd  # results from the worker; -1 once closed
        self.wfd = wfd  # jobs to the worker; -1 once closed
        self.method = method  # "fork", "exec" or "forkserver"
        self.out = OutBuffer()
        self.read_size = READ_SIZE
        self.inflight: dict[int, Task] = {}
        self.done = 0  # jobs it finished (the status page shows it)
        self.bodies = BodyLedger()  # what the worker holds (ppft_protocol.bodies: bounded on version 2)
        self.ready = False
        self.refs = RefSync()  # the `put()` refs it holds
        self.retiring = False
        self.solo_busy = False
        self.sent = 0  # jobs sent to it, counted only when the pool recycles its workers
        self.spare = False  # recycling: its replacement was started
        self.standby: PoolWorker | None = None  # recycling: the worker it replaces, while that one works
        self.started = time.monotonic()
        self.since = self.started  # last frame sent while idle, or last result (`stealing`)
        self.stolen: set[int] = set()  # job ids a Cancel was sent for, their results not back yet
        self.region = region  # the worker's output region (`outregion`), None if it has none
        self.deadline: tuple[float, Task, float] | None = None  # a limited job's (`limits`)
        self.live = (-1, 0)  # (generation, bytes) of the region's text already reported as live output

    @property
    def standing_by(self) -> bool:
        """A recycled worker's replacement, waiting for the worker it replaces to leave: it takes no job."""
        return self.standby is not None and self.standby.rfd >= 0

    def __repr__(self) -> str:
        return f"worker {self.index} (pid {self.pid})"
