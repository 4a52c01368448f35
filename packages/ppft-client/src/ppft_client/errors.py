"""The client's exceptions, all under `ppft_protocol.PPFTError`."""

from __future__ import annotations

from ppft_protocol import PPFTError
from ppft_worker import JobTimeoutError, WorkerLostError
from ppft_worker.errors import RefError, RefUnavailableError

__all__ = [
    "DestroyedServerError",
    "JobTimeoutError",
    "NoNodeError",
    "NodeLostError",
    "RefError",
    "RefUnavailableError",
    "RemoteJobError",
    "RemoteTraceback",
    "ResultDecodeError",
    "WorkerLostError",
]


class DestroyedServerError(PPFTError, RuntimeError):
    """The `Server` was destroyed: it takes no more jobs, and jobs it had not finished will never finish.

    Also a `RuntimeError`, as in ppft 1.7, so `except RuntimeError` written for it keeps working."""


class NodeLostError(PPFTError):
    """The job was on a remote node each time one was lost (3 times): it is not sent anywhere again.

    A job whose node is lost is requeued at once; only a job that keeps losing its nodes (a job that
    crashes whole ppservers, say) fails with this, naming the last node and why it was lost."""


class NoNodeError(PPFTError):
    """No node can run the job, and none will without a change from you: there are no local workers, and
    every ppserver refused this client for a reason that retrying does not cure (a wrong secret, a ppft 1.x
    server, no common protocol version). The message names each node and its reason.

    Raised from `job()` for the jobs that were waiting and for new ones, until a node becomes usable (a
    ppserver restarted with the right secret is tried again every 60 s) or `set_ncpus(n)` adds workers."""


class RemoteJobError(PPFTError):
    """A job raised an exception whose class does not exist in this process (its module is not installed
    here, or does not define it): `remote_type` names the class, the message is the job's, and the remote
    traceback is its `__cause__` (or that of the root of its chain). Its attributes, notes, chain and, in a
    group, its place come back as they were."""

    def __init__(self, remote_type: str, message: str) -> None:
        super().__init__(f"{remote_type}: {message}")
        self.remote_type = remote_type


class ResultDecodeError(PPFTError):
    """A job's return value arrived but cannot be unpickled in this process (say, its class does not
    import here). The server keeps working; only this job's value is lost."""


class RemoteTraceback(Exception):
    """Carries the formatted traceback of the worker as the `__cause__` of a re-raised job exception."""

    def __init__(self, tb: str) -> None:
        super().__init__(tb)
        self.tb = tb

    def __str__(self) -> str:
        return f'\n"""\n{self.tb}"""'
