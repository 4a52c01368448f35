"""A direct worker: a worker process serving one client over the TCP connection its ppserver handed it.

A client sends `Attach` on a new connection to a ppserver; the ppserver answers `Attached` (the last thing
it writes there) and starts a worker with that socket as its fds 0 and 1
(`ppft_worker.pool.start_direct_worker`): forked by its fork server (`forkserver.run_direct_served`, told
what the channel may be in its request), or exec'd (`PPFT_WORKER_DIRECT` says it, `main`). Either comes here
with the socket on `chan_in`/`chan_out`:

* Nothing is sent before the client's first bytes arrive (`FIRST_BYTES_TIMEOUT`, then the worker exits): the
  client speaks first after `Attached`, so our opening can never reach it in the same read as `Attached`.
* A new handshake, as the SERVER, with the ppserver's secret (the one the client proved to the ppserver),
  must end within `HANDSHAKE_TIMEOUT` (a SIGALRM, so a client that stalls in it cannot pin the process).
* Then the ordinary worker loop (`loop.WorkerLoop`): NodeInfo("worker", 1), jobs in, results out; EOF or Bye
  ends it. No output region and no shared segments: a mapped value must never leave the machine.

What the connection may use is the ppserver's decision, passed in the environment (`DIRECT_ENV`,
`AES_GCM_ENV`): an unsealed channel only when it grants this peer one, as for its own sessions; AES-256-GCM
offered when it would offer it.

The ppserver sees none of the jobs, so the worker tells it what it ran (`report`): cumulative counts on a
pipe whose write end it passed (`REPORT_FD_ENV`), after results are sent and at most every
`report.INTERVAL` (the check on that way is a clock read and a compare), after `report.INTERVAL` of
waiting for the client with counts left unsaid (the socket's receive timeout wakes the blocked read: no
syscall added on the way of a job), and once as it ends. A report that cannot be written is dropped; a pipe
the ppserver closed ends the reports, never the service to the client.

The client's `put()` refs come from the ppserver too, on a pipe of their own (`REFS_FD_ENV`, `refchannel`):
read when a job needs a ref not held here (`refs.resolve` waits for it there), and, for the releases, when
the worker has waited `report.INTERVAL` for its client; never on a job's way otherwise.
"""

from __future__ import annotations

import os
import select
import signal
import socket
import struct
import time

from ppft_protocol import Connection, Role

from . import refs
from .loop import EXIT_PROTOCOL, WorkerLoop, logger, run_loop
from .refchannel import RefChannel
from .report import INTERVAL, Reporter

__all__ = ["FIRST_BYTES_TIMEOUT", "HANDSHAKE_TIMEOUT", "serve_direct"]

FIRST_BYTES_TIMEOUT = 10.0
"""Seconds a direct worker waits for the client's first bytes after `Attached` before it exits."""

HANDSHAKE_TIMEOUT = 10.0
"""Seconds, from those first bytes, in which the client must finish the new handshake."""


class _HandshakeTimeout(Exception):
    pass


def _alarm(signum: int, frame: object) -> None:
    raise _HandshakeTimeout


class _DirectLoop(WorkerLoop):
    """The worker loop, whose handshake deadline ends once the client proved the secret, and which reports
    its counts to the ppserver (`reporter`) and takes its refs from it (`ref_channel`)."""

    def __init__(
        self, fd_in: int, fd_out: int, conn: Connection, reporter: Reporter, ref_channel: RefChannel | None
    ) -> None:
        super().__init__(fd_in, fd_out, conn, None)
        self.reporter = reporter
        self.ref_channel = ref_channel

    def established(self) -> None:
        signal.alarm(0)
        super().established()

    def flush(self) -> None:
        super().flush()
        if time.monotonic() >= self.reporter.due:  # never true without a report pipe (`due` is +inf)
            self.report()

    def receive(self) -> None:
        """Wait for the client (see `WorkerLoop.receive`); each time the socket's receive timeout ends a
        wait with nothing read, report the counts if they changed, take in the refs' changes, and wait
        again."""
        while True:
            try:
                super().receive()
            except BlockingIOError:
                if self.reporter.pending(self.jobs_done, self.failures(), self.job_time):
                    self.report()
                self.idle_refs()
                continue
            return

    def idle_refs(self) -> None:
        """Take in what the ppserver's ref channel holds (the releases above all: no ref is missing now,
        so nothing else would read it), and forget the released refs (no job is queued)."""
        channel = self.ref_channel
        if channel is not None and channel.fd >= 0 and not self.queue:
            channel.drain()
            if self.released:
                self.released = False
                refs.forget()

    def failures(self) -> int:
        return int(getattr(self.runner, "failures", 0))

    def report(self) -> None:
        """Send the counts to the ppserver (`jobs_done` and `job_time` are up to date in a flush or a
        receive: the loop puts them back first; the runner counted the failures among them)."""
        self.reporter.send(self.jobs_done, self.failures(), self.job_time)


def _wake_every(fd: int, seconds: float) -> bool:
    """Give the socket `fd` a receive timeout (SO_RCVTIMEO: a blocked read fails with EAGAIN after
    `seconds` without data); False if it cannot have one (then reports wait for results or the end)."""
    try:
        sock = socket.socket(fileno=os.dup(fd))
    except OSError:
        return False
    try:
        whole = int(seconds)
        timeval = struct.pack("ll", whole, int((seconds - whole) * 1e6))
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, timeval)
    except OSError:
        return False
    finally:
        sock.close()
    return True


def serve_direct(
    chan_in: int,
    chan_out: int,
    secret: bytes,
    *,
    allow_plain: bool,
    aes_gcm: bool,
    report_fd: int = -1,
    refs_fd: int = -1,
) -> int:
    """Serve the client on the socket `chan_in`/`chan_out` (two descriptors of one socket) as a direct worker;
    returns the exit code. `report_fd`: the write end of the ppserver's report pipe (-1: none); `refs_fd`:
    the read end of its ref pipe (-1: none, jobs using refs fail). The caller tied this process to its
    parent."""
    reporter = Reporter(report_fd)
    poller = select.poll()
    poller.register(chan_in, select.POLLIN)
    if not poller.poll(FIRST_BYTES_TIMEOUT * 1000):
        logger().warning(
            "the client sent nothing within %.0f s of Attached (it starts its handshake at once): exiting",
            FIRST_BYTES_TIMEOUT,
        )
        reporter.close()
        return EXIT_PROTOCOL
    channel: RefChannel | None = None
    os.set_blocking(chan_in, True)  # the ppserver's loop had the socket non-blocking; it is done with it now
    if reporter.fd >= 0 or refs_fd >= 0:
        _wake_every(chan_in, INTERVAL)
    conn = Connection(Role.SERVER, secret, allow_plain=allow_plain, aes_gcm=aes_gcm)
    state = _DirectLoop(chan_in, chan_out, conn, reporter, None)
    if refs_fd >= 0:
        channel = state.ref_channel = RefChannel(refs_fd, state.refs)
        refs.await_refs(channel.wait_for)
    previous = signal.signal(signal.SIGALRM, _alarm)
    signal.alarm(max(1, round(HANDSHAKE_TIMEOUT)))
    try:
        return run_loop(state)
    except _HandshakeTimeout:
        logger().warning("the client did not finish its handshake within %.0f s: exiting", HANDSHAKE_TIMEOUT)
        return EXIT_PROTOCOL
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
        state.report()  # the last counts, whatever ended the loop
        reporter.close()
        if channel is not None:
            refs.await_refs(None)
            channel.close()
        os.close(chan_in)  # the client sees EOF now rather than at exit
        if chan_out != chan_in:
            os.close(chan_out)
