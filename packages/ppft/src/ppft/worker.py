"""ppft 1.7's `ppft.worker`: the worker process a job server starts. ppft 2's is `ppft_worker`.

`python -m ppft` (what ppft 1.7 ran for each worker) and `ppft.worker.main()` run `ppft_worker.main` (`python
-m ppft_worker`): a worker speaking ppft_protocol over its stdin/stdout, as a `WorkerPool` starts it, or a
dial-in worker with `--connect HOST:PORT`. ppft 1.7's `_WorkerProcess` and `preprocess` are retired.
"""

from __future__ import annotations

from typing import Any, NoReturn

from ppft_worker import main

from ._retired import RetiredError, RetiredInternal
from .common import copyright
from .version import __version__

__all__ = ["_WorkerProcess", "__version__", "copyright", "main", "preprocess", "version"]

version = __version__

_REPLACED = (
    "a worker is now `python -m ppft_worker` (or `python -m ppft`), started by ppft_worker.pool.WorkerPool; "
    "it compiles each function once per SHA-256 digest and runs the jobs of ppft_protocol's JobBatch messages"
)


class _WorkerProcess(RetiredInternal):
    """ppft 1.7's worker loop over a `CPipeTransport`. Replaced by `ppft_worker.process` (run with
    `python -m ppft_worker`)."""

    replacement = _REPLACED


def preprocess(msg: Any) -> NoReturn:
    """ppft 1.7's unpickling and compiling of a function message. Replaced by `ppft_worker.process.execute`,
    which compiles a `FunctionBody` once per digest."""
    raise RetiredError(
        f"ppft.worker.preprocess is a ppft 1.7 internal that ppft 2 no longer has: {_REPLACED}"
    )
