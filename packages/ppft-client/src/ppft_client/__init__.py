"""ppft-client: ppft's job server as a library.

`Server` (ppft 1.7's classic API), `Job` (a `concurrent.futures.Future`), `Template`, `Executor` (a real
`concurrent.futures.Executor`), and the scheduler behind them: one I/O thread feeding local worker processes
(and, through the same node interface, remote ppservers).
"""

from .errors import (
    DestroyedServerError,
    JobTimeoutError,
    NodeLostError,
    NoNodeError,
    RefError,
    RefUnavailableError,
    RemoteJobError,
    RemoteTraceback,
    ResultDecodeError,
    WorkerLostError,
)
from .executor import Executor
from .job import Job
from .refs import Ref
from .server import Server
from .stats import Statistics
from .template import Template
from .version import __version__

__all__ = [
    "DestroyedServerError",
    "Executor",
    "Job",
    "JobTimeoutError",
    "NoNodeError",
    "NodeLostError",
    "Ref",
    "RefError",
    "RefUnavailableError",
    "RemoteJobError",
    "RemoteTraceback",
    "ResultDecodeError",
    "Server",
    "Statistics",
    "Template",
    "WorkerLostError",
    "__version__",
]
