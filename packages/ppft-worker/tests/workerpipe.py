"""Driving a real worker process (`python -S -m ppft_worker`) over its pipes, as a WorkerPool drives it: the
`Driver` of the worker-process tests (test_process*.py), with its helpers; every wait is bounded."""

from __future__ import annotations

import contextlib
import os
import pickle
import select
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable

import pytest

from ppft_protocol import (
    Closed,
    Connection,
    FunctionBody,
    Job,
    JobBatch,
    Message,
    NodeInfo,
    Result,
    ResultBatch,
    Role,
    function_digest,
)

SECRET = bytes(range(32))
TIMEOUT = 20.0
WORKER_CMD = [sys.executable, "-S", "-m", "ppft_worker"]


def worker_env(secret: bytes = SECRET, parent_pid: int | None = None) -> dict[str, str]:
    """The environment a WorkerPool gives its workers."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(p or os.getcwd() for p in sys.path))
    env["PPFT_WORKER_SECRET"] = secret.hex()
    env["PPFT_PARENT_PID"] = str(os.getpid() if parent_pid is None else parent_pid)
    return env


def body(source: str, name: str = "f") -> FunctionBody:
    source = textwrap.dedent(source)
    return FunctionBody(function_digest(name, (source,), (), b""), name, (source,))


PLUS_ONE = body("def f(x):\n    return x + 1\n")


def jobs(fn: FunctionBody, args: list[tuple[object, ...]], first_id: int = 1) -> JobBatch:
    return JobBatch(tuple(Job(first_id + i, fn.digest, pickle.dumps(a)) for i, a in enumerate(args)))


class Driver:
    """One worker process and the client end of its connection; every wait is bounded."""

    def __init__(
        self, proc: subprocess.Popen[bytes], secret: bytes = SECRET, versions: tuple[int, int] = (1, 2)
    ) -> None:
        assert proc.stdin is not None and proc.stdout is not None
        self.proc = proc
        self.conn = Connection(Role.CLIENT, secret, allow_plain=True, versions=versions)
        self.rfd = proc.stdout.fileno()
        self.wfd = proc.stdin.fileno()
        os.set_blocking(self.wfd, False)
        self.out = bytearray(self.conn.data_to_send())
        self.events: list[object] = []
        self.results: dict[int, Result] = {}
        self.result_frames = 0
        self.eof = False
        self.node_info: NodeInfo | None = None

    def send(self, *messages: Message, raw: bytes = b"") -> None:
        for message in messages:
            self.conn.send(message)
        self.out += self.conn.data_to_send() + raw

    def flush(self) -> None:
        """Write everything queued for the worker."""
        self.pump(lambda: not self.out, what="our bytes to be written")

    def pump(
        self, until: Callable[[], bool], timeout: float = TIMEOUT, what: str = "", wake: tuple[int, ...] = ()
    ) -> None:
        """Move bytes both ways until `until()` holds; fail the test after `timeout` seconds.

        `wake`: other descriptors whose readiness may make `until()` true (they are watched, not read)."""
        deadline = time.monotonic() + timeout
        while not until():
            left = deadline - time.monotonic()
            if left <= 0:
                pytest.fail(f"timed out after {timeout}s waiting for {what or until}")
            if self.eof:
                pytest.fail(f"worker closed its channel while waiting for {what or until}")
            writers = [self.wfd] if self.out else []
            readable, writable, _ = select.select([self.rfd, *wake], writers, [], left)
            if writable:
                n = os.write(self.wfd, self.out)
                del self.out[:n]
            if self.rfd in readable:
                self.receive(os.read(self.rfd, 1 << 20))

    def receive(self, data: bytes) -> None:
        if not data:
            self.eof = True
        events = self.conn.receive_data(data)
        self.out += self.conn.data_to_send()
        for event in events:
            self.events.append(event)
            if isinstance(event, ResultBatch):
                self.result_frames += 1
                for result in event.results:
                    assert result.job_id not in self.results, f"job {result.job_id} answered twice"
                    self.results[result.job_id] = result
            elif isinstance(event, NodeInfo):
                self.node_info = event

    def handshake(self) -> NodeInfo:
        self.pump(lambda: self.node_info is not None, what="handshake and NodeInfo")
        assert self.node_info is not None
        return self.node_info

    def wait_results(self, count: int, timeout: float = TIMEOUT) -> dict[int, Result]:
        self.pump(lambda: len(self.results) >= count, timeout, f"{count} results")
        return self.results

    def wait_eof(self, timeout: float = TIMEOUT) -> None:
        """Read until the worker closes its channel (a Closed event or plain EOF)."""

        def closed() -> bool:
            return self.eof or any(isinstance(e, Closed) for e in self.events)

        self.flush()
        deadline = time.monotonic() + timeout
        while not closed():
            left = deadline - time.monotonic()
            if left <= 0:
                pytest.fail(f"worker did not close its channel within {timeout}s")
            if select.select([self.rfd], [], [], left)[0]:
                data = os.read(self.rfd, 1 << 20)
                if not data:
                    self.eof = True
                else:
                    self.receive(data)


def start_worker(procs: list[subprocess.Popen[bytes]], secret: bytes = SECRET, stderr: int | None = None,
                 pass_fds: tuple[int, ...] = ()) -> subprocess.Popen[bytes]:  # fmt: skip
    """A worker process as a pool starts it, remembered in `procs` to be killed at the end of the test."""
    proc = subprocess.Popen(
        WORKER_CMD,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=stderr,
        env=worker_env(secret),
        pass_fds=pass_fds,
    )
    procs.append(proc)
    return proc


def end_workers(procs: list[subprocess.Popen[bytes]]) -> None:
    """Kill every worker of `procs` by its pid (passed or failed) and close its pipes."""
    for proc in procs:
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGKILL)
        proc.wait(TIMEOUT)
        for f in (proc.stdin, proc.stdout):
            if f is not None:
                with contextlib.suppress(OSError):
                    f.close()


def values(results: dict[int, Result]) -> dict[int, object]:
    bad = {i: (r.error_type, r.error_message) for i, r in results.items() if not r.ok}
    assert not bad, f"jobs failed: {bad}"
    return {i: pickle.loads(r.value) for i, r in results.items()}
