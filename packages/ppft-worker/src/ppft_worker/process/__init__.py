"""The worker process: one process that runs ppft jobs for its pool, and everything that runs a job.

This module is the process's entry, as its pool starts it: `python -S -c "import ppft_worker.process ..."`
(`main`; what `python -m ppft_worker` runs too, through `__main__`), the pipe to the worker on stdin
and the pipe back on stdout, the pool's secret (64 hex characters) in PPFT_WORKER_SECRET and its pid in
PPFT_PARENT_PID; or the pool forks (`ppft_worker.pool.forkstart`), and the child enters at `run_forked` with
the same descriptors and the secret in memory. Both prepare the process, then run the worker loop (`serve`).

* Channel hygiene comes first: the channel moves to private descriptors (close-on-exec) and fd 0 becomes
  /dev/null, fd 1 a copy of fd 2, so job code writing to fd 1 or 2 (`os.write(1, ...)`, a C printf) lands
  in the log, never in the protocol stream. The secret leaves `os.environ` before any job runs.
* The worker dies with its parent: PR_SET_PDEATHSIG on Linux (so even a worker stuck in a job goes), a
  check of the parent's pid right after it (the parent may have died before the call), and EOF.
* What a job writes to `sys.stdout`/`sys.stderr` is captured (`capture`) and also mirrored, as it is written,
  into the output region its pool passed (`outregion`: inherited by a forked worker, a descriptor named by
  PPFT_WORKER_OUTPUT_FD for an exec'd one), so that the text of a job that kills its worker is not lost.

The room's other modules: `loop` (the worker loop over two descriptors: `serve`), `execute` (`JobRunner`:
a job message in, a result message out, and the function bodies it holds), `namespaces` (a function body
made a namespace to run in, and the words a job's failure is described with), `picklers` (values and
exceptions pickled for the caller), `capture` and `outregion` (a job's output), `direct` (a direct worker: one
client's connection, handed over by a ppserver; DIRECT_ENV), `report` (a direct worker's counts for its
ppserver; REPORT_FD_ENV), `refchannel` (a direct worker's refs from its ppserver; REFS_FD_ENV), and
`dask_runner`, the runner of dask workers, which shares `namespaces` and `picklers` with `JobRunner`: those
three travel as text to hosts where ppft is not installed (`travel`), so they import nothing of ppft.

This room imports nothing of the pool or of the runtime that client and server share: a worker needs
neither. It must never import anything heavy before the handshake (no dill, no cryptography: the pipe is
authenticated but unsealed), never write to fd 1 or 2 except through logging, and never run a job before the
peer proved the secret. Every public name but this module's own is loaded on first use.
"""

from __future__ import annotations

import os
import struct
import sys

from ppft_protocol import Connection, Role
from ppft_protocol.cpython import libc_function

from .loop import EXIT_OK, EXIT_PROTOCOL, WorkerLoop, defer_log_setup, logger, run_loop, serve

TYPE_CHECKING = False
if TYPE_CHECKING:
    from .capture import OutputCapture
    from .dask_runner import RESULT_FIELDS, SETUP_ERROR, UNPICKLABLE_RESULT, run_batch
    from .execute import JobRunner
    from .loop import Runner
    from .outregion import (
        HEADER,
        REGION_SIZE,
        RING,
        SWITCHES,
        Snapshot,
        close_region,
        decode_text,
        map_region,
        new_region,
        read_region,
    )
    from .refs import drop_refs, hold_ref, holds_ref
    from .refs import resolve as resolve_ref
    from .report import REPORT_RECORD
    from .travel import RUNNER_MODULES, TravellingRunner, travelling_runner

__all__ = [
    "AES_GCM_ENV",
    "DIRECT_ENV",
    "EXIT_OK",
    "EXIT_PARENT_GONE",
    "EXIT_PROTOCOL",
    "FORKSERVER_DIRECT_ENV",
    "FORKSERVER_DIRECT_FLAGS",
    "FORKSERVER_FD_ENV",
    "FORKSERVER_MESSAGE",
    "FORKSERVER_SECRET_MAX",
    "HEADER",
    "OUTPUT_FD_ENV",
    "PARENT_ENV",
    "REFS_FD_ENV",
    "REGION_SIZE",
    "REPORT_FD_ENV",
    "REPORT_RECORD",
    "RESULT_FIELDS",
    "RING",
    "RUNNER_MODULES",
    "SECRET_ENV",
    "SEGMENTS_ENV",
    "SETUP_ERROR",
    "SWITCHES",
    "UNPICKLABLE_RESULT",
    "JobRunner",
    "OutputCapture",
    "Runner",
    "Snapshot",
    "TravellingRunner",
    "close_region",
    "decode_text",
    "drop_refs",
    "hold_ref",
    "holds_ref",
    "keep_freed_memory",
    "main",
    "map_region",
    "new_region",
    "read_region",
    "resolve_ref",
    "run_batch",
    "run_forked",
    "serve",
    "travelling_runner",
]

_HOMES = {
    "OutputCapture": "capture",
    "RESULT_FIELDS": "dask_runner",
    "SETUP_ERROR": "dask_runner",
    "UNPICKLABLE_RESULT": "dask_runner",
    "run_batch": "dask_runner",
    "JobRunner": "execute",
    "Runner": "loop",
    "HEADER": "outregion",
    "REGION_SIZE": "outregion",
    "RING": "outregion",
    "SWITCHES": "outregion",
    "Snapshot": "outregion",
    "close_region": "outregion",
    "decode_text": "outregion",
    "map_region": "outregion",
    "new_region": "outregion",
    "read_region": "outregion",
    "resolve_ref": "refs",
    "hold_ref": "refs",
    "holds_ref": "refs",
    "drop_refs": "refs",
    "REPORT_RECORD": "report",
    "RUNNER_MODULES": "travel",
    "TravellingRunner": "travel",
    "travelling_runner": "travel",
}

EXIT_PARENT_GONE = 1
"""The parent died before the worker could tie its life to it."""

SECRET_ENV = "PPFT_WORKER_SECRET"
"""Where an exec'd worker finds its pool's secret (hex), removed from the environment before any job runs."""

PARENT_ENV = "PPFT_PARENT_PID"

FORKSERVER_FD_ENV = "PPFT_FORKSERVER_FD"
"""Where the fork server (`forkserver`) finds the descriptor number of its end of its socket pair."""

FORKSERVER_MESSAGE = struct.Struct("=cii")
"""Every message between a pool and its fork server: a kind (b"F", b"D", b"P", b"E", b"X", b"R") and two
numbers; a direct worker's request (b"D") is followed by the secret its client proves."""

FORKSERVER_DIRECT_ENV = "PPFT_FORKSERVER_DIRECT"
"""Set to 1 for a fork server that forks a ppserver's direct workers too: it imports what they need."""

FORKSERVER_DIRECT_FLAGS = ("plain", "aes_gcm", "report", "refs")
"""The bits of a direct worker's request's first number, lowest first: an unsealed channel may be granted,
AES-256-GCM is offered, a report pipe is sent, a ref pipe is sent (after the socket, in that order)."""

FORKSERVER_SECRET_MAX = 4096
"""The longest secret sent with a direct worker's request: a longer one, and the worker is exec'd."""

SEGMENTS_ENV = "PPFT_WORKER_SEGMENTS"
"""Set to 1 by a pool that maps its workers' shared segments (`ppft_worker.mapped`): large values go there."""
OUTPUT_FD_ENV = "PPFT_WORKER_OUTPUT_FD"

DIRECT_ENV = "PPFT_WORKER_DIRECT"
"""Set by a ppserver for a direct worker (`direct`): "sealed", or "plain" when it grants the client an
unsealed channel (`--allow-plain-loopback` and a loopback peer). Unset for a pool's worker."""

REPORT_FD_ENV = "PPFT_WORKER_REPORT_FD"
"""Set by a ppserver for a direct worker: the write end of the pipe it reports its counts on (`report`)."""

REFS_FD_ENV = "PPFT_WORKER_REFS_FD"
"""Set by a ppserver for a direct worker: the read end of the pipe it passes its `put()` refs on
(`refchannel`)."""

AES_GCM_ENV = "PPFT_WORKER_AES_GCM"
"""Set to 1 by the ppserver when a direct worker's sealed channel should offer AES-256-GCM (this room does not
look at the processor: `ppft_worker.runtime` does)."""

_memory_kept = False  # `keep_freed_memory` ran in this process (or in the fork server it was forked from)

_PR_SET_PDEATHSIG = 1
_M_TRIM_THRESHOLD = -1  # mallopt parameters (malloc.h)
_M_MMAP_THRESHOLD = -3
_SIGKILL = 9


def _take_channel() -> tuple[int, int]:
    """Move the channel off fds 0 and 1: job code then reads /dev/null and writes to the log."""
    chan_in = os.dup(0)  # os.dup makes non-inheritable (close-on-exec) descriptors
    chan_out = os.dup(1)
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    os.dup2(2, 1)
    return chan_in, chan_out


def _tie_to_parent(parent_pid: int) -> bool:
    """Ask Linux to SIGKILL us when the parent dies; False if it is already gone (died before the call)."""
    if sys.platform.startswith("linux"):
        try:
            failed = _prctl_pdeathsig()
        except (ImportError, OSError, AttributeError, TypeError) as exc:
            logger().warning("cannot set PR_SET_PDEATHSIG (%s): relying on EOF to notice the parent", exc)
        else:
            if failed:
                logger().warning("prctl(PR_SET_PDEATHSIG) failed (%s): relying on EOF", failed)
    return os.getppid() == parent_pid


def keep_freed_memory() -> None:
    """Have glibc's malloc keep large freed blocks for reuse instead of handing them back to the kernel.

    By default a block of 128 KiB and more (up to 32 MiB, as the threshold adapts) is mapped fresh and
    unmapped when freed, and the top of the heap is trimmed beyond twice that: a worker echoing 16 MiB
    payloads then takes thousands of page faults per job, for the args it unpickles and the value it pickles,
    more time than copying the bytes. With blocks up to 64 MiB taken from the heap, and up to 128 MiB of
    freed memory kept at its top, the next job's payload reuses pages already there. A ppserver does the
    same for the frames it receives and seals (`NodeServer.serve_forever`). Best effort: a C library
    without `mallopt` (or not glibc) is left as it is.
    """
    if not (hasattr(os, "confstr") and os.confstr("CS_GNU_LIBC_VERSION")):
        return
    mallopt = libc_function("mallopt")
    if mallopt is None:
        return  # an interpreter without ctypes: the defaults only cost speed
    try:
        mallopt(_M_MMAP_THRESHOLD, 64 << 20)
        mallopt(_M_TRIM_THRESHOLD, 128 << 20)
    except (OSError, ValueError):
        pass


def _prctl_pdeathsig() -> str:
    """prctl(PR_SET_PDEATHSIG, SIGKILL); "" when it worked, else why not.

    Through `ppft_protocol.cpython.libc_function` (the C half of `ctypes`: importing `ctypes` itself would
    lengthen every worker's way to its first result, which `scripts/bench --only startup` times)."""
    prctl = libc_function("prctl")
    if prctl is None:
        return "no prctl found in the C library (or no ctypes)"
    return "" if prctl(_PR_SET_PDEATHSIG, _SIGKILL, 0, 0, 0) == 0 else "it returned -1"


def main() -> int:
    """Entry of a worker its pool started by exec (the pool's secret in PPFT_WORKER_SECRET); returns the
    process exit code. Anything else on the command line is `ppft_worker.__main__`'s to decide."""
    chan_in, chan_out = _take_channel()
    secret_hex = os.environ.pop(SECRET_ENV, "")
    parent = os.environ.pop(PARENT_ENV, "")
    output_fd = _own_fd(os.environ.pop(OUTPUT_FD_ENV, ""))  # -1: a job's output leaves in its result only
    segments = os.environ.pop(SEGMENTS_ENV, "") == "1"
    direct = os.environ.pop(DIRECT_ENV, "")
    aes_gcm = os.environ.pop(AES_GCM_ENV, "") == "1"
    report_fd = _own_fd(os.environ.pop(REPORT_FD_ENV, ""))
    refs_fd = _own_fd(os.environ.pop(REFS_FD_ENV, ""))
    try:
        secret = bytes.fromhex(secret_hex)
    except ValueError:
        secret = b""
    if not secret:
        sys.stderr.write(
            f"ppft-worker: {SECRET_ENV} is missing or not hex: this process is started by a ppft "
            f"WorkerPool, which passes its secret there; do not start it by hand\n"
        )
        return EXIT_PROTOCOL
    if direct:
        return _run_direct(chan_in, chan_out, secret, parent, direct, aes_gcm, (report_fd, refs_fd))
    return _run(
        chan_in,
        chan_out,
        secret,
        int(parent) if parent.isdigit() else None,
        output_fd=output_fd,
        segments=segments,
    )


def _own_fd(text: str) -> int:
    """The descriptor named by `text`, made close-on-exec (a job's own child processes get none of it), or -1
    if it names none that is open."""
    if not text.isdigit():
        return -1
    try:
        os.set_inheritable(int(text), False)
    except OSError:
        return -1
    return int(text)


def _run_direct(
    chan_in: int, chan_out: int, secret: bytes, parent: str, mode: str, aes_gcm: bool, fds: tuple[int, int]
) -> int:
    """A direct worker (`direct`): tied to its ppserver, then serving the client on the socket it passed,
    reporting its counts on `fds[0]` (-1: none; `report`), taking its refs from `fds[1]` (-1: none;
    `refchannel`)."""
    defer_log_setup()
    if mode not in ("sealed", "plain"):
        logger().error("%s=%r: expected 'sealed' or 'plain'; exiting", DIRECT_ENV, mode[:40])
        return EXIT_PROTOCOL
    try:
        keep_freed_memory()
        if parent.isdigit() and not _tie_to_parent(int(parent)):
            logger().debug("ppserver %s died before the direct worker started: exiting", parent)
            return EXIT_PARENT_GONE
        from .direct import serve_direct  # noqa: PLC0415 - only a direct worker

        return serve_direct(
            chan_in,
            chan_out,
            secret,
            allow_plain=mode == "plain",
            aes_gcm=aes_gcm,
            report_fd=fds[0],
            refs_fd=fds[1],
        )
    except (BrokenPipeError, ConnectionResetError):
        return EXIT_OK  # the client went away while we were starting
    except KeyboardInterrupt:
        return 130


def run_forked(secret: bytes, parent_pid: int, output_region: object = None, segments: bool = False) -> int:
    """Entry of a worker forked by its pool (`ppft_worker.pool.forkstart`), which left the child as an exec'd
    worker starts: the channel on fds 0 and 1, fd 2 inherited, no other descriptor. The secret, the
    parent's pid and the output region (an inherited mapping) come in memory rather than in the environment;
    the rest is `main`'s."""
    chan_in, chan_out = _take_channel()
    return _run(chan_in, chan_out, secret, parent_pid, output_region=output_region, segments=segments)


def _run(
    chan_in: int,
    chan_out: int,
    secret: bytes,
    parent: int | None,
    *,
    output_region: object = None,
    output_fd: int = -1,
    segments: bool = False,
) -> int:
    """Greet the pool, tie this process to its parent, serve; returns the exit code. `segments`: the pool
    maps shared segments (`ppft_worker.mapped`), so large values go there."""
    state = WorkerLoop(chan_in, chan_out, Connection(Role.SERVER, secret, allow_plain=True), None)
    state.output_region = output_region
    state.output_fd = output_fd
    if segments:
        from ..segments import segments_available  # noqa: PLC0415 - only a pool's own workers

        state.segments = segments_available()
    defer_log_setup()  # `logging` waits until the first results are out
    try:
        state.send_hello()  # the pool reads it while we finish starting below
        keep_freed_memory()
        if parent is not None and not _tie_to_parent(parent):
            logger().debug("parent %s died before the worker started: exiting", parent)
            return EXIT_PARENT_GONE
        return run_loop(state)
    except (BrokenPipeError, ConnectionResetError):
        return EXIT_OK  # the pool went away while we were starting
    except KeyboardInterrupt:
        return 130  # Ctrl-C reached the whole process group; the pool reports its jobs


def __getattr__(name: str) -> object:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(__import__(f"{__name__}.{home}", fromlist=[name]), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
