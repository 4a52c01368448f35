"""`Node`: what the scheduler needs of anything that runs jobs for it, besides the local pool.

A ppserver link (`remote.RemoteNode`) is one; a dask.distributed cluster is another. A new kind of node is a
new module implementing this, driven by the scheduler's I/O thread, and never a change to the scheduler.

A node whose leaving takes time (an ssh node waits for its ssh, and so for the remote side, to finish) may
also have `wait_closed(deadline)`: the scheduler closes every node first, then calls it on each, so they
all finish leaving at once, by one deadline.

Every loop registration a node makes carries its own error handler (`Loop.add_reader(..., on_error)`), so a
bug in one of its callbacks closes that node's connection, never the I/O thread; the scheduler calls
`internal_error` when a call into the node raises.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import Protocol

from ppft_worker.runtime import RefBook, Task, TaskQueue

__all__ = ["Node", "close_nodes"]

_CLOSE_WAIT = 3.0  # seconds the nodes have, all together, to finish leaving (an ssh node's remote side)


class Node(Protocol):
    """A place jobs can run. Every method is called on the scheduler's I/O thread."""

    name: str  # "host:port", "dask://host:port": the key in get_stats() and get_active_nodes()
    closed: bool  # True once the node will never take work again
    last_error: str  # why it cannot be used now ("" while it can, or before its first failure)
    permanent: bool  # the last failure is one that retrying cannot cure by itself (a wrong secret)
    refs: RefBook | None  # the client's `put()` refs, set by the scheduler (ignored where none can go)

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

    # Optional, read by the status page when a node has them (`status.node_row`): `kind` ("ppserver",
    # "dask", ...; else the class name) and `status_page` (the address of the node's own status page).

    def internal_error(self, exc: BaseException, what: str) -> None:
        """A call into the node raised (`what`: "dispatching jobs to X"): log it once (`Loop.report`), hand
        its jobs back as for a lost node, and go on as after a loss. Never raises."""
        ...


def close_nodes(nodes: Iterable[Node], report: Callable[[BaseException, str], None]) -> list[Task]:
    """Close every node and take back its jobs in flight; then let the nodes whose leaving takes time
    (`wait_closed`) finish it together, by one deadline. A node's failure is `report`ed; the others go on."""
    nodes = list(nodes)
    tasks: list[Task] = []
    for node in nodes:
        try:
            tasks += node.take_inflight()
            node.close()
        except Exception as exc:  # noqa: BLE001 - one node's bug must not keep the others open
            report(exc, f"closing node {node.name} failed")
    deadline = time.monotonic() + _CLOSE_WAIT
    for node in nodes:
        wait_closed = getattr(node, "wait_closed", None)
        if wait_closed is not None:
            try:
                wait_closed(deadline)
            except Exception as exc:  # noqa: BLE001 - as above
                report(exc, f"closing node {node.name} failed")
    return tasks
