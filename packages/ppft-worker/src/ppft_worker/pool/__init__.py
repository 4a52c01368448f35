"""The local pool: worker processes on this machine, started, fed, watched and replaced by `WorkerPool`.

* `pool`: `WorkerPool`, the owner's interface (start, dispatch from the owner's queue, results, resize,
  close) and the decisions about its workers (batches per frame, deaths, retries, replacements);
* `worker`: `PoolWorker`, the record of one worker process (its pipes, connection, jobs in flight);
* `spawn` and `forkstart`: starting a worker by exec, or by `os.fork` when that is safe;
* `output`: the pool's side of its workers' output regions (the text of a job whose worker died, live
  output); `stealing`: taking back the tail of a long frame for an idle worker.

The pool runs on its owner's I/O thread (`ppft_worker.runtime.Loop`: the client's scheduler, ppserver, a
dial-in worker) and starts the worker process of `ppft_worker.process`. It imports both rooms through their
public names, and nothing above it (`ppft_worker.dialin`, the command line) or outside ppft-worker.
Its names are loaded on first use.
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from .forkstart import START_ENV, WorkerProcess, why_not_fork
    from .output import LIVE_INTERVAL, OutputPiece
    from .pool import WorkerPool
    from .spawn import describe_exit

__all__ = [
    "LIVE_INTERVAL",
    "START_ENV",
    "OutputPiece",
    "WorkerPool",
    "WorkerProcess",
    "describe_exit",
    "why_not_fork",
]

_HOMES = {
    "START_ENV": "forkstart",
    "WorkerProcess": "forkstart",
    "why_not_fork": "forkstart",
    "LIVE_INTERVAL": "output",
    "OutputPiece": "output",
    "WorkerPool": "pool",
    "describe_exit": "spawn",
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
