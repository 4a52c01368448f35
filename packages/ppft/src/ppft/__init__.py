"""ppft: Parallel Python. Run Python functions in parallel on local cores (and remote ppservers).

    import ppft as pp
    job_server = pp.Server()
    job = job_server.submit(math.sin, (math.pi / 2,), (), ("math",))
    job()            # 1.0

The classic API of ppft 1.7 (`Server`, `Template`, `DestroyedServerError`), and beside it the modern one:
jobs are `concurrent.futures.Future`s and `Executor` is a `concurrent.futures.Executor`.
"""

from ppft_client import (
    DestroyedServerError,
    Executor,
    Job,
    NodeLostError,
    RemoteJobError,
    RemoteTraceback,
    ResultDecodeError,
    Server,
    Template,
    WorkerLostError,
)
from ppft_protocol import PPFTError

from .version import __version__

__all__ = [
    "DestroyedServerError",
    "Executor",
    "Job",
    "NodeLostError",
    "PPFTError",
    "RemoteJobError",
    "RemoteTraceback",
    "ResultDecodeError",
    "Server",
    "Template",
    "WorkerLostError",
    "__version__",
]
