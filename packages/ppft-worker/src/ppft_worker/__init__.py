"""ppft-worker: the worker process that runs ppft jobs, the local pool of them, and the runtime that the
client and ppserver share. Three rooms, each a subpackage, importing one way:

    ppft_worker.runtime   the one I/O thread and what it drives: Loop, Stream, Link, tasks, secrets, ...
          ^
    ppft_worker.process   the worker process: its entry and loop, JobRunner, output capture, pickling
          ^
    ppft_worker.pool      WorkerPool: local worker processes, started by exec or fork, fed and replaced
          ^
    ppft_worker.dialin    dial-in workers (`ppft-worker --connect HOST:PORT`): a pool serving a ppserver
    ppft_worker.__main__  `python -m ppft_worker` / `ppft-worker`: the worker process, or a dial-in worker

with `errors` and `version` below them all. Other packages import a room's public names (its `__all__`),
never a module inside it; the names below are the package's own, for users.

Every public name is loaded on first use (module `__getattr__`), never on `import ppft_worker`: a worker
process imports this package first, while its pool waits for it, and needs none of the pool's modules.
This module must stay free of imports beyond `version`.
"""

from __future__ import annotations

from .version import __version__

TYPE_CHECKING = False
if TYPE_CHECKING:
    from .__main__ import main
    from .errors import (
        JobSetupError,
        JobTimeoutError,
        SecretFileError,
        UnpicklableResultError,
        WorkerLostError,
    )
    from .pool import WorkerPool
    from .process import JobRunner, serve
    from .runtime import SECRET_ENV, Loop, default_secret_path, read_secret_file, resolve_secret

__all__ = [
    "SECRET_ENV",
    "JobRunner",
    "JobSetupError",
    "JobTimeoutError",
    "Loop",
    "SecretFileError",
    "UnpicklableResultError",
    "WorkerLostError",
    "WorkerPool",
    "__version__",
    "default_secret_path",
    "main",
    "read_secret_file",
    "resolve_secret",
    "serve",
]

_HOMES = {
    "main": "__main__",
    "JobSetupError": "errors",
    "JobTimeoutError": "errors",
    "SecretFileError": "errors",
    "UnpicklableResultError": "errors",
    "WorkerLostError": "errors",
    "WorkerPool": "pool",
    "JobRunner": "process",
    "serve": "process",
    "SECRET_ENV": "runtime",
    "Loop": "runtime",
    "default_secret_path": "runtime",
    "read_secret_file": "runtime",
    "resolve_secret": "runtime",
}


def __getattr__(name: str) -> object:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(__import__(f"{__name__}.{home}", fromlist=[name]), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
