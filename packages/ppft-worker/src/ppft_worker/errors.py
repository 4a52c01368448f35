"""Errors raised because of worker processes (all under `ppft_protocol.PPFTError`)."""

from __future__ import annotations

from ppft_protocol import PPFTError

__all__ = ["SecretFileError", "WorkerLostError"]


class WorkerLostError(PPFTError):
    """The worker running a job died (killed, crashed, exited) every time the job was tried.

    The message names the worker, its pid, how it died (exit code or signal) and how many times the job was
    tried. A job that kills its worker is retried alone, so only the job that really kills is failed.
    """


class SecretFileError(PPFTError):
    """The per-user secret file cannot be used (for example it is readable by other users)."""
