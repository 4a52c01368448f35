"""Dial-in workers that run another Python than this ppserver: which jobs they may take.

A dial-in worker says which Python it runs (`NodeInfo.python`, protocol version 2). A client sends this
ppserver functions pickled by value as bytecode of the ppserver's own Python only when they have no source
(it checked against our `NodeInfo`); with a source, the pickle carries it, and any Python compiles it
(`ppft_worker.pythons`). So a dial-in worker of another major.minor takes every job but those of functions
without source (`NO_SOURCE`, decided once per function and worker): those go back to the queue for this
ppserver's own workers and dial-in workers of its Python, or, when it has none, fail with
`ForeignPythonError` naming both Pythons. A worker that does not say (ppft 2.0.0) is taken as of our Python,
as before.
"""

from __future__ import annotations

import logging
from collections.abc import Collection
from typing import Protocol

from ppft_protocol import NodeInfo, Result, printable
from ppft_worker.pool import WorkerPool
from ppft_worker.pythons import THIS_PYTHON, ForeignPythonError, Screen, python_line, runs_bytecode_of
from ppft_worker.runtime import Link, Task

from .fairqueue import FairQueue

__all__ = ["Owner", "dialin_screen"]


class Owner(Protocol):
    """What a screen reads and does of its ppserver (`ppft_server.node.NodeServer`)."""

    pool: WorkerPool
    queue: FairQueue

    @property
    def links(self) -> Collection[Link]: ...

    def results(self, pairs: list[tuple[Task, Result]]) -> None: ...


log = logging.getLogger("ppft.server")

_ERROR_TYPE = f"{ForeignPythonError.__module__}.{ForeignPythonError.__qualname__}"


def dialin_screen(server: Owner, link: Link, peer: str, info: NodeInfo) -> Screen | None:
    """The screen of a dial-in worker's link, or None when it runs this ppserver's Python."""
    if runs_bytecode_of(info.python):
        return None
    python = printable(info.python, 60)
    log.info(
        "dial-in worker %s runs %s, this ppserver %s: it takes the jobs of functions that travel as source; "
        "those pickled without source run on workers of %s",
        peer, python, THIS_PYTHON, python_line(THIS_PYTHON),
    )  # fmt: skip
    logged: set[str] = set()

    def refuse(tasks: list[Task], message: str) -> None:
        others = server.pool.size > 0 or any(
            other is not link and other.screen is None and other.workers > 0 for other in server.links
        )
        if others:
            server.queue.requeue(tasks)
            return
        if message not in logged:
            logged.add(message)
            log.warning("%s; this ppserver has no worker of %s, so its jobs fail", message, THIS_PYTHON)
        failed = [(task, Result(task.wire[0], False, error_type=_ERROR_TYPE, error_message=message))
                  for task in tasks]  # fmt: skip
        server.results(failed)

    return Screen(f"dial-in worker {peer} ({python})", python_line(python) or python, refuse)
