"""Fixtures for ppserver's tests: ppserver subprocesses that are always killed by PID (with their worker
processes), free ports, and a line-by-line view of a process's stderr that can be waited on."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

STARTED = re.compile(r"ppserver \S+ \(pid (\d+)\) listening on (\S+):(\d+) with (\d+) worker")


def children_of(pid: int) -> list[int]:
    """The live child processes of `pid` (read from /proc: no `ps` needed)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid and fields[0] not in ("Z", "X"):
            found.append(int(entry))
    return found


def pid_alive(pid: int) -> bool:
    """True while `pid` is a running (not zombie) process."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")


def wait_until(predicate: Callable[[], bool], timeout: float = 10.0, what: str = "condition") -> None:
    """Poll `predicate` until it holds; fail the test after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.01)


def free_port() -> int:
    """A TCP port on 127.0.0.1 nobody listens on, whose UDP twin is free too (for -a)."""
    for _ in range(50):
        with socket.socket() as tcp:
            tcp.bind(("127.0.0.1", 0))
            port = tcp.getsockname()[1]
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            try:
                udp.bind(("", port))
            except OSError:
                continue
        return port
    raise AssertionError("no free port found")


_TIED = (
    "import ctypes, os, signal, sys; ctypes.CDLL(None).prctl(1, signal.SIGKILL); "
    "os.execv(sys.argv[1], sys.argv[1:])"
)


def tied_to_this_process(argv: list[str]) -> list[str]:
    """`argv`, started through a trampoline that sets PR_SET_PDEATHSIG and then execs it: the daemon a
    test starts is SIGKILLed when the test process dies, even when a timeout ends it without running
    fixture teardown (the setting survives exec; no preexec_fn in a threaded process)."""
    return [sys.executable, "-c", _TIED, *argv]


class Ppserver:
    """A ppserver subprocess, its stderr collected line by line by a reader thread."""

    def __init__(self, args: list[str], env: dict[str, str], cwd: Path) -> None:
        self.proc = subprocess.Popen(
            tied_to_this_process([sys.executable, "-m", "ppft_server", *args]),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
            cwd=cwd,
            text=True,
        )
        self.pid = self.proc.pid
        self.lines: list[str] = []
        self._changed = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        self.seen_children: set[int] = set()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            with self._changed:
                self.lines.append(line.rstrip("\n"))
                self._changed.notify_all()
        with self._changed:
            self.lines.append("<EOF>")
            self._changed.notify_all()

    @property
    def stderr(self) -> str:
        with self._changed:
            return "\n".join(line for line in self.lines if line != "<EOF>")

    def wait_for_line(self, pattern: str, timeout: float = 15.0, start: int = 0) -> re.Match[str]:
        """The first stderr line (from line `start`) matching `pattern`; fails the test after `timeout`."""
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        with self._changed:
            index = start
            while True:
                while index < len(self.lines):
                    match = regex.search(self.lines[index])
                    if match:
                        return match
                    if self.lines[index] == "<EOF>":
                        pytest.fail(f"ppserver exited before printing {pattern!r}; stderr:\n{self.stderr}")
                    index += 1
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    pytest.fail(f"ppserver printed no {pattern!r} within {timeout} s; stderr:\n{self.stderr}")
                self._changed.wait(remaining)

    def wait_started(self, timeout: float = 15.0) -> tuple[int, int]:
        """Wait for the startup line; (port, workers)."""
        match = self.wait_for_line(STARTED.pattern, timeout)
        return int(match.group(3)), int(match.group(4))

    def workers(self, expected: int, timeout: float = 15.0) -> list[int]:
        """The ppserver's worker processes, once `expected` of them run."""
        wait_until(lambda: len(children_of(self.pid)) >= expected, timeout, f"{expected} worker processes")
        pids = children_of(self.pid)
        self.seen_children.update(pids)
        return pids

    def wait(self, timeout: float = 15.0) -> int:
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            pytest.fail(f"ppserver {self.pid} did not exit within {timeout} s; stderr:\n{self.stderr}")

    def kill(self) -> None:
        """Kill the ppserver and every worker it was seen with, by PID."""
        if self.proc.poll() is None:
            self.seen_children.update(children_of(self.pid))
            self.proc.kill()
        self.proc.wait(10)
        for pid in self.seen_children:
            if pid_alive(pid):
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        self._reader.join(5)
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream is not None:
                stream.close()


StartPpserver = Callable[..., Ppserver]


@pytest.fixture
def start_ppserver(tmp_path: Path) -> Iterator[StartPpserver]:
    """Start `ppserver ARGS...` with HOME in the test's tmp_path and PPFT_SECRET set (unless `env` says
    otherwise); every ppserver started is killed, workers included, when the test ends."""
    started: list[Ppserver] = []

    def start(*args: str, env: dict[str, str | None] | None = None) -> Ppserver:
        full = dict(os.environ)
        full.update({"HOME": str(tmp_path), "PPFT_SECRET": "test-secret"})
        for key, value in (env or {}).items():
            if value is None:
                full.pop(key, None)
            else:
                full[key] = value
        server = Ppserver(list(args), full, tmp_path)
        started.append(server)
        return server

    yield start
    for server in started:
        server.kill()


@pytest.fixture(name="free_port")
def free_port_fixture() -> int:
    return free_port()


@pytest.fixture(name="wait_until")
def wait_until_fixture() -> Callable[..., None]:
    return wait_until


@pytest.fixture(name="children_of")
def children_of_fixture() -> Callable[[int], list[int]]:
    return children_of


@pytest.fixture(name="pid_alive")
def pid_alive_fixture() -> Callable[[int], bool]:
    return pid_alive
