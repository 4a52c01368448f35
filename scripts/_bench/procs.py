"""The processes the harness starts: one measurement child at a time, and ppservers for the remote scenario.

Each is started in a session of its own, so it and whatever it spawns (its worker pool) form one process
group that is killed by the started process's PID when the call that started it ends: after success, on a
timeout, on an error and on SIGTERM (the CLI turns SIGTERM into SystemExit so these `finally`s run). Every
wait has a timeout; a child that outlives its timeout is reported as "timeout", never waited for.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from .impls import REPO, BenchSetupError, env_for

__all__ = ["CHILD", "Outcome", "free_port", "ppserver", "run_child"]

CHILD = os.path.join(os.path.dirname(os.path.abspath(__file__)), "child.py")
_LISTEN_TIMEOUT = 20.0
_TAIL = 800


@dataclass
class Outcome:
    """What one child run gave: `status` is "ok", "timeout" or "error" (with the end of its output)."""

    status: str
    result: dict[str, Any]
    seconds: float
    message: str = ""


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    """Kill the process group led by `proc` (it and its workers), then reap `proc`."""
    with contextlib.suppress(ProcessLookupError):  # the group has already gone: nothing left to kill
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):  # SIGKILLed: reaped at once in practice
        proc.wait(timeout=10)


def _tail(path: str) -> str:
    with open(path, "rb") as handle:
        handle.seek(0, os.SEEK_END)
        handle.seek(max(0, handle.tell() - _TAIL))
        return handle.read().decode("utf-8", "replace").strip()


def run_child(python: str, backend: str, scenario: str, params: dict[str, Any], timeout: float) -> Outcome:
    """Run child.py once in a fresh process and return its figures, or why there are none."""
    with tempfile.TemporaryDirectory(prefix="ppft-bench-") as tmp:
        out_file = os.path.join(tmp, "result.json")
        log_file = os.path.join(tmp, "output.log")
        cmd = [python, CHILD, backend, scenario, json.dumps(params), out_file]
        start = time.perf_counter()
        with open(log_file, "wb") as log_handle:
            proc = subprocess.Popen(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=log_handle,
                stderr=log_handle,
                cwd=REPO,
                env=env_for(python),
                start_new_session=True,
            )
            try:
                returncode = proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                returncode = None
            finally:
                _kill_group(proc)
        seconds = time.perf_counter() - start
        if returncode is None:
            return Outcome("timeout", {}, seconds, f"no answer within {timeout:.0f} s; killed")
        if returncode != 0 or not os.path.exists(out_file):
            return Outcome("error", {}, seconds, f"exit code {returncode}: {_tail(log_file)}")
        with open(out_file, encoding="utf-8") as handle:
            return Outcome("ok", json.load(handle), seconds)


def free_port() -> int:
    """A port that was free a moment ago (bound to 0, then released), for a server to listen on."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _listening(port: int) -> bool:
    """Whether a socket listens on `port` (any address), read from /proc so the server sees no probe."""
    suffix = f":{port:04X}"
    for table_path in ("/proc/net/tcp", "/proc/net/tcp6"):
        if not os.path.exists(table_path):
            continue
        with open(table_path, encoding="ascii") as table:
            next(table)
            rows = (line.split() for line in table)
            if any(row[1].endswith(suffix) and row[3] == "0A" for row in rows):
                return True
    return False


@contextlib.contextmanager
def ppserver(cmd: list[str], secret: str) -> Iterator[str]:
    """Run `cmd -w 2 -p PORT -i 127.0.0.1 -s SECRET` until the block ends; yield "127.0.0.1:PORT"."""
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="ppft-bench-server-") as tmp:
        log_file = os.path.join(tmp, "server.log")
        args = [*cmd, "-w", "2", "-p", str(port), "-i", "127.0.0.1", "-s", secret]
        with open(log_file, "wb") as log_handle:
            proc = subprocess.Popen(
                args,
                stdin=subprocess.DEVNULL,
                stdout=log_handle,
                stderr=log_handle,
                cwd=REPO,
                env=env_for(cmd[0]),
                start_new_session=True,
            )
        try:
            deadline = time.monotonic() + _LISTEN_TIMEOUT
            while not _listening(port):
                if proc.poll() is not None:
                    raise BenchSetupError(
                        f"{' '.join(cmd)} exited with code {proc.returncode} before listening on "
                        f"port {port}: {_tail(log_file)}"
                    )
                if time.monotonic() > deadline:
                    raise BenchSetupError(
                        f"{' '.join(cmd)} did not listen on port {port} within {_LISTEN_TIMEOUT:.0f} s: "
                        f"{_tail(log_file)}"
                    )
                time.sleep(0.02)  # polling /proc for the listening socket, bounded by the deadline
            yield f"127.0.0.1:{port}"
        finally:
            _kill_group(proc)
