"""How a local worker process is started, and how its end is described."""

from __future__ import annotations

import os
import signal
import sys

__all__ = ["describe_exit", "worker_command", "worker_env"]


_ENTRY = "import sys, ppft_worker.process as worker; sys.exit(worker.main())"


def worker_command() -> list[str]:
    """How a local worker is started: what `python -m ppft_worker` runs, without its costs.

    `-S` skips site's start-up work (`worker_env` supplies sys.path instead); `-c` rather than `-m` skips
    `runpy`, which loads `importlib.util`, `contextlib` and `warnings` (3 ms of a start-up that races
    `ProcessPoolExecutor`'s fork). The command line still names `ppft_worker`, for `ps`.
    """
    return [sys.executable, "-S", "-c", _ENTRY]


def worker_env(secret_hex: str) -> dict[str, str]:
    """The environment of a local worker: ours, with our sys.path (so the worker imports what we import,
    from the same places, a module next to the user's script included), the pool's secret and our pid."""
    env = dict(os.environ)
    cwd = os.getcwd()
    paths = [p or cwd for p in sys.path]
    env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(paths))
    env["PPFT_WORKER_SECRET"] = secret_hex
    env["PPFT_PARENT_PID"] = str(os.getpid())
    return env


def describe_exit(returncode: int | None) -> str:
    """'exited with code 3', 'was killed by signal 9 (SIGKILL)', or 'closed its pipe' while still running."""
    if returncode is None:
        return "closed its pipe while still running"
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = "unknown signal"
        return f"was killed by signal {-returncode} ({name})"
    return f"exited with code {returncode}"
