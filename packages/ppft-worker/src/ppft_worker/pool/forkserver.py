"""The pool's side of its fork server (`ppft_worker.process.forkserver`): started when the pool replaces
workers, or when its ppserver runs direct workers (`WorkerLives.share_forkserver`), asked for each such
worker, restarted if it dies, given up after `MAX_FAILURES` failures in a row.

A pool that recycles its workers, has a memory limit, or stopped a worker for a time limit or `terminate`
(`WorkerPool`) replaces workers while its jobs run; a ppserver starts a direct worker for each direct link a
client opens (`start_direct_worker`), N of them for each client of a `ppserver -w N`. An exec'd worker costs
an interpreter start and its imports (tens of ms of CPU, `scripts/bench --only recycle`; a direct worker's
sealed channel adds `cryptography`); a worker forked by the fork server costs a fork of a small process that
has imported everything already. The pool cannot fork itself for that: its I/O thread and the owner's threads
run (`forkstart.why_not_fork`).

The server starts in the background (`start`: an exec, never waited for) and is used once it said it is
ready; until then, and after `MAX_FAILURES` failures in a row, workers are exec'd as before. Asking it
for a worker (`fork`, `fork_direct`) is one datagram out and one back, the fork's time: a bounded wait
(`REPLY_TIMEOUT`) on the pool's thread, as `subprocess.Popen` waits for its exec.

Its workers are the server's children, not the pool's: `ServedProcess` watches one through a pidfd (signals
go through it, so never to a reused pid), and learns its exit code from the server, which reaps it. Where
pidfds do not exist (not Linux, a kernel before 5.3), there is no fork server.

This module never blocks but for `REPLY_TIMEOUT`, and never raises out of `fork` or `fork_direct` but OSError.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import select
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable

from ..process import FORKSERVER_DIRECT_FLAGS, FORKSERVER_FD_ENV, FORKSERVER_MESSAGE, FORKSERVER_SECRET_MAX

MESSAGE = FORKSERVER_MESSAGE

__all__ = ["MAX_FAILURES", "REPLY_TIMEOUT", "ForkServer", "ServedProcess", "forkserver_possible"]

log = logging.getLogger("ppft.pool")

MAX_FAILURES = 3
"""Fork server failures in a row (it died, or did not answer) after which a pool execs its workers again (and
its ppserver its direct workers)."""

REPLY_TIMEOUT = 5.0
"""Seconds the pool waits for the fork server's answer to one request."""

EXIT_REPORT_WAIT = 1.0
"""Seconds a worker may be seen dead (its pidfd readable) before the pool stops waiting for the fork server to
report its exit code, and takes it as killed."""

_ENTRY = "import sys, ppft_worker.process.forkserver as server; sys.exit(server.main())"


def forkserver_possible() -> bool:
    """Whether this platform has what a fork server needs: fork, pidfds, descriptors over a Unix socket."""
    return (
        hasattr(os, "fork")
        and hasattr(os, "pidfd_open")
        and hasattr(signal, "pidfd_send_signal")
        and hasattr(socket, "send_fds")
        and sys.platform.startswith("linux")
    )


class ForkServer:
    """One pool's fork server process, restarted as needed (see the module). For the pool's thread only."""

    def __init__(self, env: Callable[[], dict[str, str]]) -> None:
        """`env`: the environment of the server process (a worker's: `spawn.worker_env`)."""
        self._env = env
        self._proc: subprocess.Popen[bytes] | None = None
        self._sock: socket.socket | None = None
        self._ready = False
        self._started = 0.0  # when it was started (monotonic)
        self.failures = 0  # in a row
        self.exits: dict[int, int] = {}  # exit codes of its children, by pid, until their handle reads them
        self.generation = 0  # bumped when the server goes: its children are dead with it
        self._closed = False

    @property
    def usable(self) -> bool:
        """Whether the pool should still try it (fewer than `MAX_FAILURES` failures in a row)."""
        return not self._closed and self.failures < MAX_FAILURES

    def start(self) -> None:
        """Start the server process if none runs; returns at once (it says when it is ready)."""
        if self._sock is not None or not self.usable:
            return
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            env = self._env()
            env[FORKSERVER_FD_ENV] = str(theirs.fileno())
            self._proc = subprocess.Popen(
                [sys.executable, "-S", "-c", _ENTRY],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                env=env,
                close_fds=True,
                pass_fds=(theirs.fileno(),),
            )
        except OSError as exc:
            ours.close()
            self._failed(f"could not start it: {exc}")
            return
        finally:
            theirs.close()
        ours.setblocking(False)
        self._sock = ours
        self._ready = False
        self._started = time.monotonic()
        log.debug("started the fork server (pid %d)", self._proc.pid)

    def ready(self) -> bool:
        """Whether a worker can be asked for now: the server runs and said it is ready (a look, no wait)."""
        if self._sock is None:
            self.start()
            return False
        if not self._ready:
            self.collect()
        return self._ready

    def starting(self, within: float) -> bool:
        """Whether the server was started less than `within` s ago and has not said yet that it is ready (a
        look, no wait): a caller that can wait (on a timer) for it may rather do so than exec a worker, whose
        start costs as much as the rest of the server's."""
        if self._sock is None or self._ready:
            return False
        self.collect()
        return self._sock is not None and not self._ready and time.monotonic() - self._started < within

    def collect(self) -> None:
        """Take in what the server said, without waiting: ready, children's exits, its own end."""
        sock = self._sock
        while sock is not None:
            try:
                data = sock.recv(MESSAGE.size)
            except BlockingIOError:
                return
            except OSError as exc:
                self._failed(f"its socket broke ({exc})")
                return
            if not data:
                self._failed("it exited")
                return
            self._take(data)

    def _take(self, data: bytes) -> tuple[bytes, int]:
        kind, pid, code = MESSAGE.unpack(data)
        if kind == b"X":
            self.exits[pid] = code
        elif kind == b"R":
            self._ready = True
        return kind, pid

    def fork(self, child_in: int, child_out: int, region_fd: int) -> ServedProcess:
        """A new worker on these pipe ends (and output region, -1 for none), forked by the server; the caller
        closes them afterwards. Raises OSError if the server failed (it is then restarted next time)."""
        fds = [child_in, child_out] + ([region_fd] if region_fd >= 0 else [])
        return self._ask(MESSAGE.pack(b"F", 0, 0), fds)

    def fork_direct(
        self, sock_fd: int, secret: bytes, *, allow_plain: bool, aes_gcm: bool, report_fd: int, refs_fd: int
    ) -> ServedProcess:
        """A new direct worker (`start_direct_worker`, whose arguments these are) on the connected socket
        `sock_fd`, forked by the server; the caller closes its pipe ends afterwards. Raises OSError if the
        server failed (it is then restarted next time), or if `secret` is too long to be sent (the server is
        not to blame)."""
        if len(secret) > FORKSERVER_SECRET_MAX:
            raise OSError(errno.EMSGSIZE, f"a secret of over {FORKSERVER_SECRET_MAX} bytes is not sent to it")
        chosen = {"plain": allow_plain, "aes_gcm": aes_gcm, "report": report_fd >= 0, "refs": refs_fd >= 0}
        flags = sum(1 << bit for bit, name in enumerate(FORKSERVER_DIRECT_FLAGS) if chosen[name])
        fds = [fd for fd in (sock_fd, report_fd, refs_fd) if fd >= 0]
        return self._ask(MESSAGE.pack(b"D", flags, len(secret)) + secret, fds)

    def _ask(self, request: bytes, fds: list[int]) -> ServedProcess:
        """Send one request, wait (up to `REPLY_TIMEOUT`) for the server's answer: the child it forked."""
        sock = self._sock
        assert sock is not None and self._ready
        try:
            socket.send_fds(sock, [request], fds)
        except OSError as exc:
            self._failed(f"a request failed ({exc})")
            raise OSError(f"the fork server failed: {exc}") from exc
        deadline = time.monotonic() + REPLY_TIMEOUT
        while True:
            try:
                data = sock.recv(MESSAGE.size)
            except BlockingIOError:
                remaining = deadline - time.monotonic()
                if remaining <= 0 or not select.select([sock], [], [], remaining)[0]:
                    self._failed(f"it did not answer within {REPLY_TIMEOUT:g} s")
                    raise OSError("the fork server did not answer") from None
                continue
            except OSError as exc:
                self._failed(f"its socket broke ({exc})")
                raise
            if not data:
                self._failed("it exited")
                raise OSError("the fork server exited")
            kind, pid = self._take(data)
            if kind == b"P":
                self.failures = 0
                return ServedProcess(pid, self)
            if kind == b"E":
                raise OSError(pid, f"the fork server could not fork: {os.strerror(pid)}")

    def _failed(self, why: str) -> None:
        """The server is gone or useless: forget it (its children die with it); the next `ready` starts a new
        one, unless this was the `MAX_FAILURES`th failure in a row."""
        self.failures += 1
        self.generation += 1
        if self.failures >= MAX_FAILURES:
            log.warning(
                "the fork server failed %d times in a row (%s): its workers are exec'd from now on",
                self.failures, why,
            )  # fmt: skip
        else:
            log.info("the fork server failed (%s): a new one starts when a worker is next asked of it", why)
        self._stop(0.0)

    def _stop(self, grace: float) -> None:
        if self._sock is not None:
            self._sock.close()  # the server exits on EOF
            self._sock = None
        self._ready = False
        proc, self._proc = self._proc, None
        if proc is not None:
            try:
                proc.wait(grace)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                proc.wait()

    def close(self, grace: float = 1.0) -> None:
        """Stop the server (after the pool stopped its workers: their exits are read until then)."""
        self._closed = True
        self._stop(grace)

    @property
    def pid(self) -> int | None:
        """The server's pid while it runs (or starts)."""
        return None if self._proc is None else self._proc.pid


class ServedProcess:
    """A worker forked by the fork server: the part of `subprocess.Popen` the pool uses (`WorkerProcess`),
    its exit code as the server reported it. If the server died first, the worker died with it (SIGKILL)."""

    def __init__(self, pid: int, server: ForkServer) -> None:
        self.pid = pid
        self.returncode: int | None = None
        self._server = server
        self._generation = server.generation
        self._pidfd = os.pidfd_open(pid)
        self._exited_at: float | None = None

    def __repr__(self) -> str:
        return f"<ServedProcess pid {self.pid} returncode {self.returncode}>"

    def poll(self) -> int | None:
        if self.returncode is not None:
            return self.returncode
        server = self._server
        server.collect()
        code = server.exits.pop(self.pid, None)
        gone = server.generation != self._generation  # its server is: so is it (PR_SET_PDEATHSIG), or soon
        if code is None and select.select([self._pidfd], [], [], 0)[0]:  # it has exited
            now = time.monotonic()
            if self._exited_at is None:
                self._exited_at = now
            # its code comes from the server, which reaps it; a server that does not say (gone, or hung:
            # stopped with SIGSTOP) must not make the pool wait for ever for a worker that is dead
            if gone or now - self._exited_at > EXIT_REPORT_WAIT:
                code = -signal.SIGKILL
        if code is not None:
            self.returncode = code
            os.close(self._pidfd)
            self._pidfd = -1
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        deadline = None if timeout is None else time.monotonic() + timeout
        delay = 0.0005
        while (code := self.poll()) is None:
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                raise subprocess.TimeoutExpired(f"ppft worker {self.pid}", timeout or 0.0)
            time.sleep(delay if remaining is None else min(delay, remaining))
            delay = min(delay * 2, 0.05)
        return code

    def send_signal(self, sig: int) -> None:
        if self.poll() is None:  # through the pidfd: never a pid that was reaped and reused
            with contextlib.suppress(ProcessLookupError):
                signal.pidfd_send_signal(self._pidfd, sig)

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)
