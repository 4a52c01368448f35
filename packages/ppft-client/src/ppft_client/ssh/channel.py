"""`SshChannel`: one `ssh` process, carrying one connection to an ssh node, driven by the client's loop.

    start --> socketpair; ssh started with one end as its stdin and stdout, stderr on a pipe
          --> TOKEN (a fresh secret) written first --> READY awaited (anything before it is skipped)
          --> on_ready(sock): the node speaks the protocol over the socket, as over TCP
    ssh's stderr --> one log line per line ("ppft.ssh"), the remote's at the level it logged them at
    a failure before READY, or the stream's end --> ssh given EXIT_WAIT s to exit, then killed
          --> `failures.explain` (stderr, exit status) --> on_failed(reason, permanent)

The socket is our end of a socketpair: the node's `Stream` reads and writes it exactly as a TCP socket, so
every rule of a remote node (heartbeats, windows, reconnection) holds over ssh unchanged. ssh runs in a
session of its own (a Ctrl-C at the terminal is the client's to handle, not ssh's to die of), and its exit
is watched through a pidfd (polled where there is none): never by waiting on stderr, which a ControlPersist
master may hold open. The loop is never blocked, but in `wait_closed` (the client is leaving), which waits
until the deadline `nodes.close_nodes` gives every node for ssh to finish (the remote side has then
stopped: it exits when its stdin closes).

Lines ssh and the remote wrote before READY are held back: if the channel fails, they are quoted in the
reason instead of logged twice. Text from the other side is always escaped (`printable`) before it is logged.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import signal
import socket
import subprocess
import time
from collections import deque
from collections.abc import Callable

from ppft_protocol import printable
from ppft_worker.runtime import Loop, Timer, internal_error_reason
from ppft_worker.stdio import READY, make_token

__all__ = ["EXIT_WAIT", "GREETING_TIMEOUT", "SshChannel"]

log = logging.getLogger("ppft.ssh")

GREETING_TIMEOUT = 30.0
"""Seconds ssh has to log in and start ppft_worker on the remote (ProxyJump hops, a cold start take time)."""
EXIT_WAIT = 2.0
"""Seconds ssh has to exit once its channel ended (so its message and status are known), or be killed."""
_MAX_JUNK = 64 * 1024  # bytes a remote shell may print on stdout before READY
_MAX_LINE = 4096  # characters of a stderr line kept
_MAX_HELD = 50  # stderr lines held back before READY
_PEEK = 4096
_POLL = 0.05
_REMOTE_LINE = re.compile(r"ppft-worker\[\d+\] (DEBUG|INFO|WARNING|ERROR|CRITICAL) ")
_LEVELS = {"DEBUG": logging.DEBUG, "INFO": logging.INFO, "WARNING": logging.WARNING, "ERROR": logging.ERROR,
           "CRITICAL": logging.CRITICAL}  # fmt: skip


class SshChannel:
    """One ssh process to one node: `start`, then `on_ready(sock)` or `on_failed(reason)`; `finish` after
    the stream over it ended; `close` when the node leaves for good."""

    def __init__(
        self,
        loop: Loop,
        name: str,
        argv: list[str],
        secret: bytes,
        *,
        on_ready: Callable[[socket.socket], None],
        on_failed: Callable[[str, int | None, list[str], bool], None],
    ) -> None:
        """`on_failed(reason, returncode, lines, ready)`: the channel is over; `lines` are what ssh and the
        remote wrote on stderr that is not ppft's own log (its errors included), for `explain`."""
        self.loop = loop
        self.name = name
        self.argv = argv
        self.proc: subprocess.Popen[bytes] | None = None
        self.sock: socket.socket | None = None
        self.ready = False
        self.done = False
        self._secret = secret
        self._on_ready = on_ready
        self._on_failed = on_failed
        self._lines: deque[str] = deque(maxlen=20)
        self._held: list[tuple[int, str]] = []
        self._partial = b""
        self._junk = bytearray()
        self._stderr = -1
        self._pidfd = -1
        self._timer: Timer | None = None
        self._reason = ""  # why the channel ended, once it did

    # -- starting --------------------------------------------------------------------------------------

    def start(self) -> None:
        """Start ssh; a failure to start is reported (`on_failed`) on the loop's next round."""
        ours, theirs = socket.socketpair()
        try:
            self.proc = subprocess.Popen(
                self.argv, stdin=theirs.fileno(), stdout=theirs.fileno(), stderr=subprocess.PIPE,
                start_new_session=True,
            )  # fmt: skip
        except OSError as exc:
            ours.close()
            theirs.close()
            reason = f"cannot run {self.argv[0]!r}: {exc.strerror or exc}"
            self.loop.call_soon_threadsafe(lambda: self._report(reason, 127))
            return
        finally:
            theirs.close()
        self.sock = ours
        ours.sendall(make_token(self._secret))  # 52 bytes into an empty socket buffer: never blocks
        ours.setblocking(False)
        assert self.proc.stderr is not None
        self._stderr = self.proc.stderr.fileno()
        os.set_blocking(self._stderr, False)
        self.loop.add_reader(self._stderr, self._stderr_readable, self._crash)
        self.loop.add_reader(ours.fileno(), self._greeting, self._crash)
        try:
            self._pidfd = os.pidfd_open(self.proc.pid)
        except (AttributeError, OSError):
            self._pidfd = -1  # no pidfd here: the exit is polled while it is awaited
        else:
            self.loop.add_reader(self._pidfd, self._exited, self._crash)
        self._timer = self.loop.call_later(GREETING_TIMEOUT, self._greeting_late, self._crash)

    def _greeting(self) -> None:
        """Our end is readable before READY: skip what the remote shell printed, find READY, hand over."""
        sock = self.sock
        assert sock is not None
        try:
            data = sock.recv(_PEEK, socket.MSG_PEEK)
        except BlockingIOError:
            return
        except OSError as exc:
            self.finish(f"the ssh channel broke before ppft_worker started ({exc.strerror or exc})")
            return
        if not data:
            self.finish("ssh closed the channel before ppft_worker started")
            return
        at = data.find(READY)
        if at >= 0:
            self._consume(at + len(READY), at)
            self._became_ready()
            return
        keep = next((k for k in range(min(len(READY) - 1, len(data)), 0, -1) if data.endswith(READY[:k])), 0)
        if keep < len(data):
            self._consume(len(data) - keep, len(data) - keep)
            if len(self._junk) > _MAX_JUNK:
                self.finish(
                    f"the remote wrote more than {_MAX_JUNK // 1024} KiB on stdout and never started "
                    f"ppft_worker (it began with {printable(bytes(self._junk[:200]))!r})"
                )
        else:  # only the start of READY has arrived: look again shortly rather than spin on it
            self.loop.remove_reader(sock.fileno())
            self.loop.call_later(_POLL, self._look_again, self._crash)

    def _look_again(self) -> None:
        if self.sock is not None and not self.ready and not self._reason:
            self.loop.add_reader(self.sock.fileno(), self._greeting, self._crash)

    def _consume(self, n: int, junk: int) -> None:
        """Read `n` bytes that have arrived already; the first `junk` of them are not ours."""
        sock = self.sock
        assert sock is not None
        data = b""
        while len(data) < n:
            data += sock.recv(n - len(data))
        self._junk += data[:junk]

    def _became_ready(self) -> None:
        sock = self.sock
        assert sock is not None
        self.ready = True
        self.loop.remove_reader(sock.fileno())
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        for level, line in self._held:
            log.log(level, "%s: %s", self.name, printable(line, 1000))
        self._held.clear()
        self._lines.clear()  # from here on, what explains a lost channel
        if self._junk:
            log.warning(
                "%s: the remote wrote %s on stdout before ppft_worker started (a shell startup file such as "
                "~/.bashrc that prints?); it was skipped", self.name, printable(bytes(self._junk), 300),
            )  # fmt: skip
        self._on_ready(sock)

    def _greeting_late(self) -> None:
        self._timer = None
        if not self.ready:
            self.finish(f"ssh did not log in and start ppft_worker within {GREETING_TIMEOUT:.0f} s")

    # -- stderr ----------------------------------------------------------------------------------------

    def _stderr_readable(self) -> None:
        try:
            data = os.read(self._stderr, 65536)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            self._close_stderr()
            return
        self._take(data)

    def _take(self, data: bytes) -> None:
        lines = (self._partial + data).split(b"\n")
        self._partial = lines.pop()
        if len(self._partial) > _MAX_LINE:
            lines.append(self._partial)
            self._partial = b""
        for raw in lines:
            self._line(raw[:_MAX_LINE].decode("utf-8", "replace").rstrip("\r"))

    def _line(self, text: str) -> None:
        if not text.strip():
            return
        match = _REMOTE_LINE.match(text)
        level = _LEVELS[match.group(1)] if match else logging.WARNING
        if match is None or level >= logging.ERROR:
            self._lines.append(text)
        if not self.ready:
            if len(self._held) < _MAX_HELD:
                self._held.append((level, text))
            return
        log.log(level, "%s: %s", self.name, printable(text, 1000))

    def _close_stderr(self) -> None:
        if self._stderr >= 0:
            self.loop.remove_reader(self._stderr)
            self._stderr = -1
            if self.proc is not None and self.proc.stderr is not None:
                with contextlib.suppress(OSError):
                    self.proc.stderr.close()

    def _drain_stderr(self) -> None:
        """What ssh wrote on stderr and we have not read yet (it has exited)."""
        for _ in range(64):
            if self._stderr < 0:
                break
            try:
                data = os.read(self._stderr, 65536)
            except OSError:
                break
            if not data:
                break
            self._take(data)
        if self._partial:
            self._line(self._partial[:_MAX_LINE].decode("utf-8", "replace"))
            self._partial = b""

    # -- ending ----------------------------------------------------------------------------------------

    def finish(self, reason: str) -> None:
        """The channel is over (`reason`): our end closes, ssh has EXIT_WAIT seconds to exit, then
        `on_failed` says why, with what ssh said."""
        if self._reason or self.done:
            return
        self._reason = reason
        if self._timer is not None:
            self._timer.cancel()
        if self.sock is not None:
            if not self.ready:
                self.loop.remove_reader(self.sock.fileno())
            with contextlib.suppress(OSError):
                self.sock.close()  # ssh reads EOF: it tells the remote, which exits
        if self.proc is None or self.proc.poll() is not None:
            self._exited()
            return
        self._timer = self.loop.call_later(EXIT_WAIT, self._kill_late, self._crash)
        if self._pidfd < 0:
            self.loop.call_later(_POLL, self._poll, self._crash)

    def _poll(self) -> None:
        if not self.done and self.proc is not None:
            if self.proc.poll() is not None:
                self._exited()
            else:
                self.loop.call_later(_POLL, self._poll, self._crash)

    def _kill_late(self) -> None:
        self._timer = None
        if not self.done and self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.kill()
            self.proc.wait()
            self._finish(returncode=None)

    def _exited(self) -> None:
        """ssh exited (its pidfd is readable), or is known to have."""
        proc = self.proc
        if proc is None:
            self._finish(returncode=127)
            return
        if proc.poll() is None:
            return  # not yet (a spurious wake-up)
        if self._pidfd >= 0:
            self.loop.remove_reader(self._pidfd)
            os.close(self._pidfd)
            self._pidfd = -1
        if self._reason:
            self._finish(proc.returncode)
        # else: ssh is gone while the stream runs: the stream sees EOF and ends, and `finish` follows

    def _finish(self, returncode: int | None) -> None:
        if self.done:
            return
        self._drain_stderr()
        self._release()
        self._on_failed(self._reason, returncode, list(self._lines), self.ready)

    def _report(self, reason: str, returncode: int) -> None:
        self._reason = reason
        self._finish(returncode)

    def _release(self) -> None:
        self.done = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._close_stderr()
        if self._pidfd >= 0:
            self.loop.remove_reader(self._pidfd)
            with contextlib.suppress(OSError):
                os.close(self._pidfd)
            self._pidfd = -1
        if self.sock is not None:
            if not self.ready:
                self.loop.remove_reader(self.sock.fileno())
            with contextlib.suppress(OSError):
                self.sock.close()

    def close(self) -> None:
        """The node leaves for good: our end closes (the remote side exits when its stdin does);
        `on_failed` is not called. `wait_closed` then waits for ssh."""
        if self.done:
            return
        proc = self.proc
        self._release()
        if proc is not None and not self.ready:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)  # still logging in: nothing of ours runs there yet

    def wait_closed(self, deadline: float) -> None:
        """After `close`: wait until `deadline` (time.monotonic()) for ssh to finish, then SIGTERM it, then
        SIGKILL it a second later; it is reaped either way."""
        proc = self.proc
        if proc is None:
            return
        for then in (proc.terminate, proc.kill, None):
            try:
                proc.wait(None if then is None else max(0.0, deadline - time.monotonic()))
                break
            except subprocess.TimeoutExpired:
                assert then is not None
                with contextlib.suppress(ProcessLookupError):
                    then()
                deadline = time.monotonic() + 1.0
        log.debug("%s: ssh exited with status %s", self.name, proc.returncode)

    def _crash(self, exc: BaseException) -> None:
        """A callback of this channel raised (the loop logged it): the channel ends, naming the bug."""
        if self.done:
            return
        if not self._reason:
            self.finish(internal_error_reason(exc))
        else:
            self._kill_late()
