"""A ppserver that runs another Python than this client: which jobs it may take, decided once per function.

The ppserver says which Python runs its jobs (`NodeInfo.python`, protocol version 2). Where it is another
major.minor than this client's, a function pickled by value still runs there when its source is known: the
pickle carries it, and the ppserver's Python compiles it (`ppft_worker.pythons`). A function that has no
source (typed in `python -c`, stdin, `exec` or a plain REPL) is never sent there: its jobs fail at once with
`ForeignPythonError`, which names both Pythons and what to do, and the client's log says it once per
function and node. Nothing of this runs for a node of this client's own Python, nor for one that does not
say (a ppft 2.0.0 ppserver, version 1): their links have no screen, and pay nothing per job.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from ppft_protocol import NodeInfo, Result, printable
from ppft_worker.pythons import THIS_PYTHON, ForeignPythonError, Screen, python_line, runs_bytecode_of
from ppft_worker.runtime import Task

__all__ = ["foreign_python_screen", "refused_result"]

log = logging.getLogger("ppft.client")

_ERROR_TYPE = f"{ForeignPythonError.__module__}.{ForeignPythonError.__qualname__}"


def foreign_python_screen(
    name: str, info: NodeInfo, refuse: Callable[[list[Task], str], None]
) -> Screen | None:
    """The screen of a link to ppserver `name` (its `info`), or None when its Python runs our bytecode."""
    python = printable(info.python, 60)
    if runs_bytecode_of(info.python):
        return None
    log.info(
        "ppserver %s runs %s and this client %s: functions pickled by value travel as their source there; "
        "one without source cannot run there",
        name, python, THIS_PYTHON,
    )  # fmt: skip
    logged: set[str] = set()

    def refused(tasks: list[Task], message: str) -> None:
        if message not in logged:
            logged.add(message)
            log.warning("%s; its jobs fail (first: job %d)", message, tasks[0].wire[0])
        refuse(tasks, message)

    return Screen(f"ppserver {name} ({python})", python_line(python) or python, refused)


def refused_result(task: Task, message: str) -> Result:
    """The failure of a job that was not sent, because its function cannot run on that node's Python."""
    return Result(task.wire[0], False, error_type=_ERROR_TYPE, error_message=message)
