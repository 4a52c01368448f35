"""Limits on jobs (protocol version 2): the time a job may run, and stopping a job that runs.

* `JobLimits` (0x33) travels just before the `JobBatch` that carries its jobs: for each listed job, the
  seconds it may run once a worker starts it. The receiver enforces it (a job over its limit has its worker
  killed and fails with `ppft_worker.errors.JobTimeoutError`); a job it does not list has no limit.
* `Terminate` (0x34) asks the receiver to stop these jobs wherever they are: queued ones are dropped, running
  ones have their worker killed (it is replaced). Each still comes back once, as cancelled (the result a
  `Cancel` gets), unless it finished first.

Both exist only in version 2: a version-1 connection refuses them both ways, and a sender speaking to a
version-1 peer enforces the limit itself and sends a `Cancel` (which stops only a job that has not started).
This module never unpickles anything and does no I/O.
"""

from __future__ import annotations

import math
import struct

from .codec import U32, JobIdsMessage, Message, Reader
from .errors import DecodeError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import ClassVar

__all__ = ["JobLimits", "Terminate"]

_LIMIT = struct.Struct(">Qd")  # job id, seconds
_set = object.__setattr__


class JobLimits(Message):
    """`limits`: `(job_id, seconds)` pairs, each job's time limit; every `seconds` positive and finite."""

    __slots__ = ("limits",)
    __match_args__ = ("limits",)
    TYPE: ClassVar[int] = 0x33
    SINCE: ClassVar[int] = 2

    limits: tuple[tuple[int, float], ...]

    def __init__(self, limits: tuple[tuple[int, float], ...]) -> None:
        _set(self, "limits", limits)

    def _encode(self, parts: list[bytes | memoryview]) -> None:
        parts.append(U32.pack(len(self.limits)))
        pack = _LIMIT.pack
        for job_id, seconds in self.limits:
            if not (seconds > 0 and math.isfinite(seconds)):
                raise ValueError(f"job {job_id}: a time limit must be positive and finite, not {seconds!r}")
            parts.append(pack(job_id, seconds))

    @classmethod
    def _decode(cls, r: Reader) -> JobLimits:
        count = r.u32("count")
        off = r.need(_LIMIT.size * count, "limits")
        limits = []
        for i in range(count):
            job_id, seconds = _LIMIT.unpack_from(r.mv, off + i * _LIMIT.size)
            if not (seconds > 0 and math.isfinite(seconds)):
                raise DecodeError(f"job limits: job {job_id} has a time limit of {seconds!r} s")
            limits.append((job_id, seconds))
        return cls(tuple(limits))


class Terminate(JobIdsMessage):
    """Stop these jobs, queued or running (a running job's worker is killed and replaced)."""

    __slots__ = ()
    TYPE: ClassVar[int] = 0x34
    SINCE: ClassVar[int] = 2
