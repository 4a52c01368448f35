"""How a local worker process is started by exec, and how a worker's end is described.

(A pool's first workers may be forked instead: `forkstart`.)"""

from __future__ import annotations

import contextlib
import fcntl
import os
import signal
import subprocess
import sys

from ..process import SEGMENTS_ENV
from .forkstart import WorkerProcess, fork_worker

TYPE_CHECKING = False
if TYPE_CHECKING:
    from .forkserver import ForkServer

__all__ = [
    "FORKSERVER",
    "describe_exit",
    "exec_worker",
    "start_worker",
    "worker_command",
    "worker_env",
    "worker_pythonpath",
]

_F_SETPIPE_SZ = 1031

FORKSERVER = "forked by the fork server"
"""What `start_worker` says of a worker its pool's fork server forked."""


_ENTRY = "import sys, ppft_worker.process as worker; sys.exit(worker.main())"


def worker_command() -> list[str]:
    """How a local worker is started: what `python -m ppft_worker` runs, without its costs.

    `-S` skips site's start-up work (`worker_env` supplies sys.path instead); `-c` rather than `-m` skips
    `runpy`, which loads `importlib.util`, `contextlib` and `warnings` before the worker's first result
    (`PPFT_START=exec scripts/bench --only startup` times an exec'd start against `ProcessPoolExecutor`). The
    command line still names `ppft_worker`, for `ps`.
    """
    return [sys.executable, "-S", "-c", _ENTRY]


def worker_pythonpath() -> str:
    """Our sys.path as a PYTHONPATH, so a worker imports what we import, from the same places (a module next
    to the user's script included)."""
    cwd = os.getcwd()
    return os.pathsep.join(dict.fromkeys(p or cwd for p in sys.path))


def worker_env(secret_hex: str) -> dict[str, str]:
    """The environment of a local worker: ours, with our sys.path (`worker_pythonpath`), the pool's secret
    and our pid."""
    env = dict(os.environ)
    env["PYTHONPATH"] = worker_pythonpath()
    env["PPFT_WORKER_SECRET"] = secret_hex
    env["PPFT_PARENT_PID"] = str(os.getpid())
    return env


def start_worker(
    secret: bytes,
    why_exec: str,
    output: tuple[int, object] | None = None,
    server: ForkServer | None = None,
    segments: bool = False,
) -> tuple[WorkerProcess, int, int, str]:
    """Start a worker, forked if `why_exec` is empty (exec'd if the fork fails), else by the fork `server`
    if it is given and ready, else exec'd; returns the process, the pool's ends of its pipes (results to
    read, jobs to write: non-blocking, enlarged) and how it started: "" if it was forked, FORKSERVER if the
    fork server forked it, else why it was exec'd. `output`: the worker's output region
    (`outregion.new_region`), which a forked worker inherits mapped and the others get as a descriptor.
    `segments`: the pool maps the worker's shared segments (`ppft_worker.mapped`; the fork server's workers
    learn it from the server's environment, `WorkerLives._want_forkserver`). Raises OSError if no process
    could be started."""
    child_in, jobs_w = os.pipe()
    results_r, child_out = os.pipe()
    try:
        proc: WorkerProcess | None = None
        if why_exec and server is not None and server.ready():
            try:
                proc = server.fork(child_in, child_out, output[0] if output else -1)
                why_exec = FORKSERVER
            except OSError as exc:
                why_exec = f"{why_exec}; the fork server failed ({exc})"
        if not why_exec:
            try:
                region = output[1] if output else None
                proc = fork_worker(child_in, child_out, secret, worker_pythonpath(), region, segments)
            except (OSError, RuntimeError) as exc:  # RuntimeError: a subinterpreter may not fork
                why_exec = f"fork failed ({exc})"
        if proc is None:
            proc = exec_worker(child_in, child_out, secret, output[0] if output else -1, segments)
    except BaseException:
        os.close(jobs_w)
        os.close(results_r)
        raise
    finally:
        os.close(child_in)
        os.close(child_out)
    for fd in (results_r, jobs_w):
        os.set_blocking(fd, False)
        with contextlib.suppress(OSError):  # not Linux, or over the user's pipe-size limit: default size
            fcntl.fcntl(fd, _F_SETPIPE_SZ, 1 << 20)
    return proc, results_r, jobs_w, why_exec


def exec_worker(
    child_in: int, child_out: int, secret: bytes, output_fd: int = -1, segments: bool = False
) -> subprocess.Popen[bytes]:
    """Start a worker by exec, serving the pool over `child_in` (its stdin) and `child_out` (its stdout); the
    caller closes those pipe ends in the parent afterwards. `output_fd`: the descriptor of its output region,
    passed on (named by PPFT_WORKER_OUTPUT_FD)."""
    env = worker_env(secret.hex())
    if segments:
        env[SEGMENTS_ENV] = "1"
    pass_fds: tuple[int, ...] = ()
    if output_fd >= 0:
        env["PPFT_WORKER_OUTPUT_FD"] = str(output_fd)
        pass_fds = (output_fd,)
    return subprocess.Popen(
        worker_command(), stdin=child_in, stdout=child_out, env=env, close_fds=True, pass_fds=pass_fds
    )


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
