"""The local pool: worker processes on this machine, started, fed, watched and replaced by `WorkerPool`.

* `pool`: `WorkerPool`, the owner's interface (start, dispatch from the owner's queue, results, resize,
  close) and the decisions about its workers (batches per frame, deaths, retries, replacements);
* `worker`: `PoolWorker`, the record of one worker process (its pipes, connection, jobs in flight);
* `spawn` and `forkstart`: starting a worker by exec, or by `os.fork` when that is safe; `forkserver`: the
  fork server that forks replacements (`ForkServer`); `direct`: starting a ppserver's direct worker, a
  process for one client's connection (`start_direct_worker`), forked by that fork server when it can be;
* `output`: the pool's side of its workers' output regions (the text of a job whose worker died, live
  output); `stealing`: taking back the tail of a long frame for an idle worker; `shared`: large buffers
  to and from the workers in shared segments (`ppft_worker.mapped`).

The pool runs on its owner's I/O thread (`ppft_worker.runtime.Loop`: the client's scheduler, ppserver, a
dial-in worker) and starts the worker process of `ppft_worker.process`. It imports both rooms through their
public names, and nothing above it (`ppft_worker.dialin`, the command line) or outside ppft-worker.

Local workers need a POSIX system (Linux; macOS): their pipes are set up with `fcntl`. Elsewhere (Windows)
importing the pool raises an ImportError that names the platform and what works there, rather than a bare
"No module named 'fcntl'" from deep inside.
"""

from __future__ import annotations

import sys

try:
    import fcntl  # noqa: F401 - only to know that this system has it
except ImportError:
    raise ImportError(
        f"ppft's workers need a POSIX system (Linux or macOS), and this Python runs on {sys.platform}, "
        "which has no fcntl: local workers, ppservers and dial-in workers cannot run here. ppft-protocol "
        "(the wire protocol) works on any platform; on Windows, run ppft under WSL."
    ) from None

from .direct import start_direct_worker
from .forkserver import ForkServer
from .forkstart import START_ENV, WorkerProcess, why_not_fork
from .output import LIVE_INTERVAL, OutputPiece
from .pool import WorkerPool
from .spawn import describe_exit

__all__ = [
    "LIVE_INTERVAL",
    "START_ENV",
    "ForkServer",
    "OutputPiece",
    "WorkerPool",
    "WorkerProcess",
    "describe_exit",
    "start_direct_worker",
    "why_not_fork",
]
