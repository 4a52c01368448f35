"""The processes the harness starts: one measurement child at a time, ppservers and dask clusters.

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

__all__ = [
    "CHILD",
    "LOAD_CHILD",
    "Outcome",
    "dask_cluster",
    "free_port",
    "ppserver",
    "ppservers",
    "run_child",
]

CHILD = os.path.join(os.path.dirname(os.path.abspath(__file__)), "child.py")
LOAD_CHILD = os.path.join(os.path.dirname(CHILD), "child_load.py")
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


def run_child(
    python: str, backend: str, scenario: str, params: dict[str, Any], timeout: float, script: str = CHILD
) -> Outcome:
    """Run child.py (or `script`, e.g. LOAD_CHILD) once in a fresh process; its figures, or why none."""
    with tempfile.TemporaryDirectory(prefix="ppft-bench-") as tmp:
        out_file = os.path.join(tmp, "result.json")
        log_file = os.path.join(tmp, "output.log")
        cmd = [python, script, backend, scenario, json.dumps(params), out_file]
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


def _spawn(args: list[str], log_file: str) -> subprocess.Popen[bytes]:
    with open(log_file, "wb") as log_handle:
        return subprocess.Popen(
            args,
            stdin=subprocess.DEVNULL,
            stdout=log_handle,
            stderr=log_handle,
            cwd=REPO,
            env=env_for(args[0]),
            start_new_session=True,
        )


@contextlib.contextmanager
def dask_cluster(python: str, workers: int = 2) -> Iterator[str]:
    """A `dask scheduler` and `workers` single-threaded `dask worker --no-nanny` processes until the block
    ends; yields the scheduler's address "tcp://127.0.0.1:PORT" once every worker has registered."""
    port = free_port()
    address = f"tcp://127.0.0.1:{port}"
    with tempfile.TemporaryDirectory(prefix="ppft-bench-dask-") as tmp:
        procs: list[subprocess.Popen[bytes]] = []
        logs: list[str] = []
        try:
            logs.append(os.path.join(tmp, "scheduler.log"))
            args = [python, "-m", "distributed.cli.dask_scheduler", "--host", "127.0.0.1", "--port",
                    str(port), "--no-dashboard"]  # fmt: skip
            procs.append(_spawn(args, logs[0]))
            for i in range(workers):
                logs.append(os.path.join(tmp, f"worker-{i}.log"))
                args = [python, "-m", "distributed.cli.dask_worker", address, "--no-nanny", "--nthreads", "1",
                        "--no-dashboard", "--host", "127.0.0.1"]  # fmt: skip
                procs.append(_spawn(args, logs[-1]))
            deadline = time.monotonic() + _LISTEN_TIMEOUT
            while not all(_registered(log) for log in logs[1:]):
                dead = [(proc, log) for proc, log in zip(procs, logs, strict=True) if proc.poll() is not None]
                if dead:
                    raise BenchSetupError(
                        f"a dask process exited with code {dead[0][0].returncode} before the cluster was up: "
                        f"{_tail(dead[0][1])}"
                    )
                if time.monotonic() > deadline:
                    raise BenchSetupError(
                        f"the dask workers did not register with {address} within {_LISTEN_TIMEOUT:.0f} s: "
                        f"{_tail(logs[-1])}"
                    )
                time.sleep(0.05)  # polling the workers' logs, bounded by the deadline
            yield address
        finally:
            for proc in procs:
                _kill_group(proc)


def _registered(log_file: str) -> bool:
    """Whether a dask worker's log says it has registered with its scheduler."""
    with open(log_file, "rb") as handle:
        return b"Registered to:" in handle.read()


def _free_ports(count: int) -> list[int]:
    """`count` distinct ports that were free a moment ago (all bound to 0 at once, then released)."""
    with contextlib.ExitStack() as stack:
        socks = [stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) for _ in range(count)]
        for sock in socks:
            sock.bind(("127.0.0.1", 0))
        return [int(sock.getsockname()[1]) for sock in socks]


@contextlib.contextmanager
def ppservers(
    cmd: list[str], secret: str, count: int, workers: int, extra: tuple[str, ...] = ()
) -> Iterator[list[str]]:
    """`count` ppservers `cmd -w WORKERS -p PORT -i 127.0.0.1 -s SECRET [EXTRA...]`, started at once (their
    interpreters boot in parallel) and each killed by its PID's process group when the block ends;
    yields their "127.0.0.1:PORT" addresses once every one listens."""
    ports = _free_ports(count)
    timeout = _LISTEN_TIMEOUT + 2.0 * count  # 16 interpreters booting on 2 CPUs take their time
    with tempfile.TemporaryDirectory(prefix="ppft-bench-servers-") as tmp:
        started: list[tuple[subprocess.Popen[bytes], int, str]] = []
        try:
            for port in ports:
                log_file = os.path.join(tmp, f"server-{port}.log")
                args = [*cmd, "-w", str(workers), "-p", str(port), "-i", "127.0.0.1", "-s", secret, *extra]
                started.append((_spawn(args, log_file), port, log_file))
            deadline = time.monotonic() + timeout
            waiting = list(started)
            while waiting:
                waiting = [entry for entry in waiting if not _listening(entry[1])]
                for proc, port, log_file in waiting:
                    if proc.poll() is not None:
                        raise BenchSetupError(
                            f"{' '.join(cmd)} exited with code {proc.returncode} before listening on "
                            f"port {port}: {_tail(log_file)}"
                        )
                if waiting and time.monotonic() > deadline:
                    raise BenchSetupError(
                        f"{len(waiting)} of {count} ppservers did not listen within {timeout:.0f} s "
                        f"(port {waiting[0][1]}: {_tail(waiting[0][2])})"
                    )
                if waiting:
                    time.sleep(0.02)  # polling /proc for the listening sockets, bounded by the deadline
            yield [f"127.0.0.1:{port}" for port in ports]
        finally:
            for proc, _port, _log in started:
                _kill_group(proc)
