"""A direct worker's counts for its ppserver: a one-way pipe of small fixed-size records.

    direct worker --REPORT_RECORD (cumulative: jobs done, errors, job time), at most every INTERVAL--> pipe
        --> ppserver's loop (`ppft_server.direct`): the deltas go into its counters (`counting.count_direct`)

The ppserver never sees a direct worker's jobs (they travel on the client's connection only), so the worker
tells it what it ran: `Reporter.send` writes one `REPORT_RECORD` of cumulative counts, with a non-blocking
write of fewer than PIPE_BUF bytes (atomic: the reader sees whole records only). A full pipe drops that
record: the next one is cumulative and says it all. A broken pipe (the ppserver closed its end) ends the
reporting, never the worker: its client goes on being served.

The worker loop decides when (`ppft_worker.process.direct`): after it sends results, when `due` has passed
(a clock read and a compare on its way), when it has waited `INTERVAL` for its client with something left
to say, and once as it ends. What is lost: the counts since the last record of a worker that is SIGKILLed.

This module must never block, never raise into the worker loop, nor write anything but `REPORT_RECORD`s.
"""

from __future__ import annotations

import os
import struct
import time

__all__ = ["INTERVAL", "REPORT_RECORD", "Reporter"]

REPORT_RECORD = struct.Struct("=QQd")
"""One report: jobs done, of which failed (the job raised, or its value could not be sent), and their total
run time in seconds (the `wall_time` of their results); all cumulative since the worker started."""

INTERVAL = 0.5
"""Seconds between two reports at most (one more as the worker ends)."""

_NEVER = float("inf")


class Reporter:
    """The write end of a direct worker's report pipe (`fd`; -1 for none: `due` is then never reached)."""

    __slots__ = ("due", "fd", "sent")

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.due = _NEVER if fd < 0 else 0.0  # `time.monotonic()` from which a report is due
        self.sent = (0, 0, 0.0)
        if fd >= 0:
            try:
                os.set_inheritable(fd, False)  # a job's own child processes get none of it
                os.set_blocking(fd, False)
            except OSError:
                self._end()

    def pending(self, done: int, errors: int, busy: float) -> bool:
        """Whether these counts are not yet reported (and there is a pipe to report them in)."""
        return self.fd >= 0 and (done, errors, busy) != self.sent

    def send(self, done: int, errors: int, busy: float) -> None:
        """Write the counts if they changed since the last record; the next is due `INTERVAL` from now."""
        if self.fd < 0:
            return
        self.due = time.monotonic() + INTERVAL
        counts = (done, errors, busy)
        if counts == self.sent:
            return
        try:
            os.write(self.fd, REPORT_RECORD.pack(done, errors, busy))
        except BlockingIOError:
            return  # the pipe is full (the ppserver is slow to read): the next record is cumulative
        except OSError:
            self._end()  # the ppserver closed its end (or the descriptor is gone): no more reports
            return
        self.sent = counts

    def close(self) -> None:
        if self.fd >= 0:
            self._end()

    def _end(self) -> None:
        fd, self.fd, self.due = self.fd, -1, _NEVER
        try:
            os.close(fd)
        except OSError:
            pass
