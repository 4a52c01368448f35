"""Real clusters on 127.0.0.1 for the integration tests: ppserver and dial-in worker subprocesses.

Imported by tests as `clusterlib` (the root pyproject puts tests/ on the path).

Every process started here is ended by its PID at teardown, even when the test fails; ports come from
`proclib.free_port` (checked by binding, outside the kernel's ephemeral range); every wait has a deadline.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field

from proclib import children_of, free_port, pid_alive, tied_to_this_process
from proclib import wait_until as _wait_until

SECRET = "integration-test-secret"

ACCEPT_WORKERS = ("--accept-workers",)
"""ppserver's flag that lets the client secret admit dial-in workers too (by default it admits none)."""


def listening(port: int) -> bool:
    """Whether something listens on TCP `port` (read from /proc, so no probe connection is made)."""
    wanted = f":{port:04X}"
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as f:
                for line in f.readlines()[1:]:
                    fields = line.split()
                    if fields[1].endswith(wanted) and fields[3] == "0A":
                        return True
        except FileNotFoundError:
            continue
    return False


def wait_until(predicate: Callable[[], bool], timeout: float = 15.0, what: str = "condition") -> None:
    """`proclib.wait_until`, with the longer default a cluster's processes need."""
    _wait_until(predicate, timeout, what)


@dataclass
class Proc:
    popen: subprocess.Popen[bytes]
    port: int = 0
    log: str = ""
    children: list[int] = field(default_factory=list)

    @property
    def pid(self) -> int:
        return self.popen.pid

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"


class Cluster:
    """Starts ppservers and dial-in workers; `close()` ends them all by PID."""

    def __init__(self, tmp_path) -> None:  # type: ignore[no-untyped-def]
        self.tmp_path = tmp_path
        self.procs: list[Proc] = []

    def _spawn(self, argv: list[str], name: str) -> Proc:
        log = self.tmp_path / f"{name}-{len(self.procs)}.log"
        env = dict(os.environ, PPFT_SECRET="not-the-cluster-secret")
        with open(log, "wb") as out:
            popen = subprocess.Popen(
                tied_to_this_process(argv), stdout=out, stderr=subprocess.STDOUT, env=env
            )
        proc = Proc(popen, log=str(log))
        self.procs.append(proc)
        return proc

    def ppserver(self, workers: int = 2, *, port: int | None = None, secret: str = SECRET,
                 extra: tuple[str, ...] = (), python: str | None = None) -> Proc:  # fmt: skip
        """`python`: the interpreter that runs it (another venv's, for mixed Python versions)."""
        chosen = port
        for _ in range(3):  # a free port may be taken by another test's process before ppserver binds it
            port = chosen or free_port()
            argv = [python or sys.executable, "-m", "ppft_server", "-p", str(port), "-i", "127.0.0.1",
                    "-w", str(workers), "-s", secret, *extra]  # fmt: skip
            proc = self._spawn(argv, "ppserver")
            proc.port = port
            wait_until(
                lambda p=proc: listening(p.port) or p.popen.poll() is not None, 30, f"ppserver on {port}"
            )
            if proc.popen.poll() is None or chosen or "in use" not in self.read_log(proc):
                break
        assert proc.popen.poll() is None, self.read_log(proc)
        return proc

    def dialin(
        self,
        server: Proc,
        workers: int = 1,
        secret: str = SECRET,
        extra: tuple[str, ...] = (),
        python: str | None = None,
    ) -> Proc:
        argv = [python or sys.executable, "-m", "ppft_worker", "--connect", server.address,
                "-w", str(workers), "-s", secret, *extra]  # fmt: skip
        return self._spawn(argv, "dialin")

    @staticmethod
    def read_log(proc: Proc) -> str:
        with open(proc.log, errors="replace") as f:
            return f.read()

    def kill(self, proc: Proc, sig: int = signal.SIGKILL) -> None:
        proc.children = children_of(proc.pid)
        if proc.popen.poll() is None:
            os.kill(proc.pid, sig)

    def close(self) -> None:
        for proc in self.procs:
            kids = children_of(proc.pid) + proc.children
            if proc.popen.poll() is None:
                os.kill(proc.pid, signal.SIGKILL)
            proc.popen.wait(10)
            for kid in kids:
                if pid_alive(kid):
                    os.kill(kid, signal.SIGKILL)
