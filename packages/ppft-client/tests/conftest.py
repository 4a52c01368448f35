"""Fixtures for the client's tests: servers that are always destroyed, and process helpers."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator

import pytest
from proclib import pid_alive, tied_to_this_process, wait_until

import ppft_client


@pytest.fixture(name="pid_alive")
def pid_alive_fixture() -> Callable[[int], bool]:
    return pid_alive


@pytest.fixture(name="wait_until")
def wait_until_fixture() -> Callable[..., None]:
    return wait_until


@pytest.fixture
def make_server() -> Iterator[Callable[..., ppft_client.Server]]:
    """Servers made through this are destroyed after the test, and their workers are checked gone."""
    servers: list[ppft_client.Server] = []

    def make(*args: object, **kwargs: object) -> ppft_client.Server:
        server = ppft_client.Server(*args, **kwargs)  # type: ignore[arg-type]
        servers.append(server)
        return server

    yield make
    for server in servers:
        pids = list(server._scheduler.pool.pids)
        server.destroy()
        for pid in pids:
            wait_until(lambda pid=pid: not pid_alive(pid), 10, f"worker {pid} to exit")


@pytest.fixture
def run_script(tmp_path):  # type: ignore[no-untyped-def]
    """Run a Python script in a subprocess (killed by PID at teardown); returns the Popen."""
    procs: list[subprocess.Popen[str]] = []

    def run(source: str, **kwargs: object) -> subprocess.Popen[str]:
        path = tmp_path / f"script_{len(procs)}.py"
        path.write_text(source)
        proc = subprocess.Popen(
            tied_to_this_process([sys.executable, str(path)]), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, text=True, cwd=str(tmp_path),
            **kwargs,  # type: ignore[call-overload]
        )  # fmt: skip
        procs.append(proc)
        return proc

    yield run
    for proc in procs:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
