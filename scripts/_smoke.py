"""The smoke suite of one Python: run by scripts/test-pythons with the interpreter of a venv that has this
checkout's wheels installed (never the project's .venv). Standard library and ppft only.

Three checks, each printed as `ok   NAME (seconds)` or `FAIL NAME: why`, then `N passed, N failed`:

- examples: `python -m ppft.tests`, the classic example programs, on local workers;
- executor: a `ppft.Executor` map on local workers, of a function shipped as source and of a lambda;
- ppserver: a real `ppserver` of this venv (its console script), on a port of 127.0.0.1, and a client of
  the same Python that runs jobs on it only (no local worker), its statistics naming the node.

Every process started here is ended by its PID, whatever happens; every wait has a deadline.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import IO

SECRET = "smoke-test-secret"
BIN = Path(sys.executable).parent


def square(x):
    return x * x


def check_examples() -> str:
    done = subprocess.run(
        [sys.executable, "-m", "ppft.tests"], capture_output=True, text=True, timeout=300, check=False
    )
    if done.returncode != 0:
        raise AssertionError(f"python -m ppft.tests exited {done.returncode}:\n{done.stdout}{done.stderr}")
    return done.stdout.strip().splitlines()[-1]


def check_executor() -> str:
    import ppft

    with ppft.Executor(max_workers=2) as executor:
        squares = list(executor.map(square, range(50), chunksize=5))
        plus = list(executor.map(lambda x: x + 1, range(10)))
    assert squares == [x * x for x in range(50)], squares
    assert plus == list(range(1, 11)), plus
    return "50 squares and 10 lambdas"


def _wait(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.05)


def _listening_port(log: IO[bytes]) -> int | None:
    """The port the ppserver says it listens on (it is started with -p 0 and binds a free one itself, so no
    other process can take the port between its choice and its use), or None before it says so. Read with
    `pread`: the file's offset is shared with the ppserver, which writes at it."""
    fd = log.fileno()
    match = re.search(rb"listening on \S+:(\d+) with", os.pread(fd, os.fstat(fd).st_size, 0))
    return int(match.group(1)) if match else None


def check_ppserver() -> str:
    import ppft

    with tempfile.TemporaryFile() as log:
        server = subprocess.Popen(
            [str(BIN / "ppserver"), "-p", "0", "-i", "127.0.0.1", "-w", "2", "-s", SECRET],
            stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        try:
            _wait(lambda: _listening_port(log) is not None or server.poll() is not None, 60, "ppserver")
            port = _listening_port(log)
            if server.poll() is not None or port is None:
                log.seek(0)
                raise AssertionError(
                    f"ppserver exited {server.returncode}:\n{log.read().decode(errors='replace')}"
                )
            job_server = ppft.Server(0, ppservers=(f"127.0.0.1:{port}",), secret=SECRET)
            try:
                jobs = [job_server.submit(square, (i,)) for i in range(20)]
                values = [job() for job in jobs]
                stats = job_server.get_stats()
            finally:
                job_server.destroy()
            assert values == [i * i for i in range(20)], values
            remote = stats.get(f"127.0.0.1:{port}")
            assert remote is not None and remote.njobs == 20, {k: v.njobs for k, v in stats.items()}
        finally:
            if server.poll() is None:
                os.kill(server.pid, signal.SIGTERM)
                try:
                    server.wait(20)
                except subprocess.TimeoutExpired:
                    os.kill(server.pid, signal.SIGKILL)
                    server.wait(20)
    return f"20 jobs on ppserver 127.0.0.1:{port}"


def main() -> int:
    version = ".".join(map(str, sys.version_info[:3]))
    passed = failed = 0
    for name, check in (
        ("examples", check_examples),
        ("executor", check_executor),
        ("ppserver", check_ppserver),
    ):
        start = time.monotonic()
        try:
            detail = check()
        except BaseException as exc:  # noqa: BLE001 - every failure is reported, and the next check runs
            failed += 1
            print(f"FAIL {name} on Python {version}: {type(exc).__name__}: {exc}")
            traceback.print_exc(file=sys.stdout)
        else:
            passed += 1
            print(f"ok   {name} on Python {version} ({time.monotonic() - start:.1f} s): {detail}")
        sys.stdout.flush()
    print(f"smoke on Python {version}: {passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
