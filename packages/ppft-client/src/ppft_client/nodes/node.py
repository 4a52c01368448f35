"""`Node`: what the scheduler needs of anything that runs jobs for it, besides the local pool.

A ppserver link (`remote.RemoteNode`) is one; a dask.distributed cluster is another. A new kind of node is a
new module implementing this, driven by the scheduler's I/O thread, and never a change to the scheduler.

Every loop registration a node makes carries its own error handler (`Loop.add_reader(..., on_error)`), so a
bug in one of its callbacks closes that node's connection, never the I/O thread; the scheduler calls
`internal_error` when a call into the node raises.
"""

from __future__ import annotations

from typing import Protocol

from ppft_worker.runtime import Task, TaskQueue

__all__ = ["Node"]


class Node(Protocol):
    """A place jobs can run. Every method is called on the scheduler's I/O thread."""

    name: str  # "host:port", "dask://host:port": the key in get_stats() and get_active_nodes()
    closed: bool  # True once the node will never take work again
    last_error: str  # why it cannot be used now ("" while it can, or before its first failure)
    permanent: bool  # the last failure is one that retrying cannot cure by itself (a wrong secret)

    @property
    def ready(self) -> bool:
        """Connected and able to take jobs now."""
        ...

    @property
    def workers(self) -> int:
        """How many jobs it runs at once (0 while not ready)."""
        ...

    @property
    def jobs_done(self) -> int: ...

    @property
    def job_time(self) -> float: ...

    @property
    def inflight(self) -> int: ...

    @property
    def status(self) -> str:
        """Why it takes no jobs now, in a few words for the waiting report ("" when it does)."""
        ...

    def start(self) -> None:
        """Begin connecting; report results and lost jobs through the callbacks given at creation."""
        ...

    def dispatch(self, queue: TaskQueue) -> int:
        """Take what the node's window allows from the head of `queue`; returns how many."""
        ...

    def terminate(self, task: Task) -> bool:
        """Stop `task` if the node holds it (`Job.terminate`): False if it does not. The task gets no
        result from the node afterwards."""
        ...

    def take_inflight(self) -> list[Task]:
        """Remove and return the jobs it holds (before `close`, to fail or requeue them)."""
        ...

    def close(self) -> None:
        """Leave for good, releasing what the node opened (and only that)."""
        ...

    def internal_error(self, exc: BaseException, what: str) -> None:
        """A call into the node raised (`what`: "dispatching jobs to X"): log it once (`Loop.report`), hand
        its jobs back as for a lost node, and go on as after a loss. Never raises."""
        ...
