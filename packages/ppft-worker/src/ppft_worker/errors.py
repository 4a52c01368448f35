"""The errors of ppft-worker, all under `ppft_protocol.PPFTError`: a worker lost, a job it could not set up or
whose value it could not pickle, a secret file it refuses.

Their names travel: a failed job's result names its error's type (`ppft_worker.errors.JobSetupError`) and
carries it pickled by reference, so this module is where a caller finds them, in every room and every
release. ppft 2.0.0 defined the two job errors in `ppft_worker.execute`; a client still loads them from
there as these (`ppft_client.rebuild`). This module imports nothing but `ppft_protocol`.
"""

from __future__ import annotations

from ppft_protocol import PPFTError

__all__ = [
    "JobSetupError",
    "JobTimeoutError",
    "RefError",
    "RefUnavailableError",
    "SecretFileError",
    "UnpicklableResultError",
    "WorkerLostError",
]


class WorkerLostError(PPFTError):
    """The worker running a job died (killed, crashed, exited) every time the job was tried.

    The message names the worker, its pid, how it died (exit code or signal) and how many times the job was
    tried. A job that kills its worker is retried alone, so only the job that really kills is failed.
    """


class JobTimeoutError(PPFTError, TimeoutError):
    """A job ran longer than its `timeout` (`submit(..., timeout=)`, `Server(job_timeout=)`): the worker
    running it was killed and replaced, and the job is not retried. The message names the job, its
    function, the node and the limit. Also a `TimeoutError`, so `except TimeoutError` catches it."""


class JobSetupError(PPFTError):
    """The worker could not set a job up: its function body (unknown, not compiling, an import failing)
    or its arguments (not unpickling). The message says which and what to do."""


class UnpicklableResultError(PPFTError):
    """A job ran, but the value it returned can be pickled neither by `pickle` nor by `dill`."""


class SecretFileError(PPFTError):
    """The per-user secret file cannot be used (for example it is readable by other users)."""


class RefError(PPFTError, ValueError):
    """A ref (`Server.put`) used where it is not valid: after `release()` (or its server's `destroy()`), or
    with a server other than the one that made it. The message names the ref and says what to do."""


class RefUnavailableError(PPFTError):
    """A job needs a ref that the node running it does not hold: the node refused it (short of memory, over
    its `--refs-memory`), or cannot hold refs at all (a dask cluster, a version-1 peer). The message names
    the ref and the reason; jobs that do not use it go on."""
