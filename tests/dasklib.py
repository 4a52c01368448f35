"""Real dask clusters on 127.0.0.1 for the dask integration tests: a scheduler and workers as subprocesses.

Workers run through `dask_worker_without_ppft.py`, so they cannot import any package of this project.
Every process started here is ended by its PID at teardown; ports come from binding port 0; every wait has a
deadline.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from clusterlib import Proc, free_port, listening, tied_to_this_process, wait_until

WORKER_SCRIPT = str(Path(__file__).with_name("dask_worker_without_ppft.py"))


class DaskCluster:
    """One `dask scheduler` and its `dask worker --no-nanny` processes; `close()` ends them all."""

    def __init__(self, tmp_path: Path, *, allowed_failures: int | None = None) -> None:
        self.tmp_path = tmp_path
        self.procs: list[Proc] = []
        self.workers: list[Proc] = []
        self.env = dict(os.environ)
        if allowed_failures is not None:
            self.env["DASK_DISTRIBUTED__SCHEDULER__ALLOWED_FAILURES"] = str(allowed_failures)
        port = free_port()
        argv = [sys.executable, "-m", "distributed.cli.dask_scheduler", "--host", "127.0.0.1",
                "--port", str(port), "--no-dashboard"]  # fmt: skip
        self.scheduler = self._spawn(argv, "scheduler")
        self.scheduler.port = port
        proc = self.scheduler
        wait_until(lambda: listening(port) or proc.popen.poll() is not None, 30, f"dask scheduler on {port}")
        assert proc.popen.poll() is None, self.read_log(proc)

    @property
    def address(self) -> str:
        return f"tcp://127.0.0.1:{self.scheduler.port}"

    @property
    def entry(self) -> str:
        return f"dask://127.0.0.1:{self.scheduler.port}"

    def add_workers(self, n: int) -> list[Proc]:
        """Start `n` single-threaded workers and wait until the scheduler has them all."""
        started = []
        for _ in range(n):
            argv = [sys.executable, WORKER_SCRIPT, self.address, "--no-nanny", "--nthreads", "1",
                    "--no-dashboard", "--host", "127.0.0.1"]  # fmt: skip
            started.append(self._spawn(argv, "worker"))
        self.workers += started
        self.wait_for_workers(len([w for w in self.workers if w.popen.poll() is None]))
        return started

    def wait_for_workers(self, n: int, timeout: float = 30.0) -> None:
        from distributed import Client

        with Client(self.address, timeout=10, set_as_default=False) as client:
            client.wait_for_workers(n, timeout=timeout)

    def _spawn(self, argv: list[str], name: str) -> Proc:
        log = self.tmp_path / f"dask-{name}-{len(self.procs)}.log"
        with open(log, "wb") as out:
            popen = subprocess.Popen(
                tied_to_this_process(argv), stdout=out, stderr=subprocess.STDOUT, env=self.env
            )
        proc = Proc(popen, log=str(log))
        self.procs.append(proc)
        return proc

    @staticmethod
    def read_log(proc: Proc) -> str:
        with open(proc.log, errors="replace") as f:
            return f.read()

    def kill(self, proc: Proc) -> None:
        if proc.popen.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
        proc.popen.wait(10)

    def close(self) -> None:
        for proc in self.procs:
            if proc.popen.poll() is None:
                os.kill(proc.pid, signal.SIGKILL)
            proc.popen.wait(10)
