"""ppft: Parallel Python. Run Python functions in parallel on local cores (and remote ppservers).

    import ppft as pp
    job_server = pp.Server()
    job = job_server.submit(math.sin, (math.pi / 2,), (), ("math",))
    job()            # 1.0

The classic API of ppft 1.7 (`Server`, `Template`, `DestroyedServerError`, the modules `ppft.common`,
`ppft.transport`, `ppft.auto`, `ppft.worker`, `ppft.server`, and the internals pathos uses: `_Task`,
`_Statistics`), and beside it the modern one: jobs are `concurrent.futures.Future`s and `Executor` is a
`concurrent.futures.Executor`. `import pp` is the same package under ppft 1.x's other name.

This module only gathers names: it must never start a thread, a process or a socket at import.
"""

from ppft_client import (
    DestroyedServerError,
    Executor,
    Job,
    JobTimeoutError,
    NodeLostError,
    NoNodeError,
    Ref,
    RefError,
    RefUnavailableError,
    RemoteJobError,
    RemoteTraceback,
    ResultDecodeError,
    Server,
    Statistics,
    Template,
    WorkerLostError,
)
from ppft_protocol import PPFTError

from . import auto, common, transport, worker
from ._about import citation, copyright, license
from ._retired import RetiredError, RetiredInternal
from .version import __version__

__all__ = [
    "_USE_SUBPROCESS",
    "DestroyedServerError",
    "Executor",
    "Job",
    "JobTimeoutError",
    "NoNodeError",
    "NodeLostError",
    "PPFTError",
    "Ref",
    "RefError",
    "RefUnavailableError",
    "RemoteJobError",
    "RemoteTraceback",
    "ResultDecodeError",
    "RetiredError",
    "Server",
    "Template",
    "WorkerLostError",
    "_RWorker",
    "_Statistics",
    "_Task",
    "_Worker",
    "__version__",
    "auto",
    "citation",
    "common",
    "copyright",
    "license",
    "transport",
    "version",
    "worker",
]

version = __version__

_Task = Job
"""ppft 1.7's name of the job class (what `submit` returns); pathos subclasses it."""

_Statistics = Statistics
"""ppft 1.7's name of the per-node statistics (`Server.get_stats()` values: ncpus, njobs, time)."""

_USE_SUBPROCESS = True
"""As in ppft 1.7: local workers are subprocesses (always; the flag is only read)."""


class _Worker(RetiredInternal):
    """ppft 1.7's handle on one local worker process. Replaced by `ppft_worker.pool.WorkerPool`, which starts,
    feeds, replaces and stops every local worker of a `Server` from its one I/O thread."""

    replacement = (
        "local workers belong to ppft_worker.pool.WorkerPool; size them with Server(ncpus) and "
        "Server.set_ncpus(n)"
    )


class _RWorker(RetiredInternal):
    """ppft 1.7's connection to one remote ppserver worker slot. Replaced by `ppft_client.nodes.RemoteNode`:
    one authenticated, sealed connection per ppserver carrying batches of jobs for all its workers."""

    replacement = (
        "ppservers are used through ppft_client.nodes.RemoteNode; add one with "
        "Server(ppservers=('host:port',)) or Server.connect1(host, port)"
    )
