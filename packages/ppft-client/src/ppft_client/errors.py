"""The client's exceptions, all under `ppft_protocol.PPFTError`."""

from __future__ import annotations

import builtins
import pickle
from concurrent.futures import CancelledError

from ppft_protocol import PPFTError, Result
from ppft_worker.errors import WorkerLostError

__all__ = [
    "DestroyedServerError",
    "NoNodeError",
    "NodeLostError",
    "RemoteJobError",
    "RemoteTraceback",
    "ResultDecodeError",
    "WorkerLostError",
    "rebuild_exception",
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
    """A job raised an exception that could not be rebuilt here (it did not pickle, or its class does not
    import in this process); `remote_type` names its class and the remote traceback is its `__cause__`."""

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


_CANCELLED = "concurrent.futures.CancelledError"  # the error type of a job answered as cancelled


def rebuild_exception(result: Result) -> BaseException:
    """The job's exception as raised on the worker, with the remote traceback as `__cause__`."""
    exc: BaseException | None = None
    if result.exception:
        try:
            loaded = pickle.loads(result.exception)
        except Exception:  # noqa: BLE001 - fall back to rebuilding from the type name below
            loaded = None
        if isinstance(loaded, BaseException):
            exc = loaded
    if exc is None and result.error_type == _CANCELLED:
        exc = CancelledError(result.error_message)  # a job a node cancelled before it ran (on our request)
    if exc is None:
        module, _, name = result.error_type.rpartition(".")
        cls = getattr(builtins, name, None) if module == "builtins" else None
        if isinstance(cls, type) and issubclass(cls, BaseException):
            try:
                exc = cls(result.error_message)
            except Exception:  # noqa: BLE001 - some builtin exceptions take other arguments
                exc = None
        if exc is None:
            exc = RemoteJobError(result.error_type, result.error_message)
    if result.traceback:
        exc.__cause__ = RemoteTraceback(result.traceback)
    return exc
