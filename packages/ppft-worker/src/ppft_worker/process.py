"""The worker process (`python -m ppft_worker`): a protocol endpoint on two file descriptors, running jobs.

A `WorkerPool` starts this module with `python -S -m ppft_worker`, the pipe to the worker on stdin and the
pipe back on stdout, the pool's secret (64 hex characters) in PPFT_WORKER_SECRET and its pid in
PPFT_PARENT_PID; or it forks (`forkstart`), and the child enters at `run_forked` with the same descriptors and
the secret in memory. `main` prepares the process, `serve` runs the loop:

    pool --JobBatch / FunctionBody / Cancel / StatsRequest--> chan_in --> deque of jobs --> JobRunner.run
    pool <--ResultBatch / StatsReply / NodeInfo----------------- chan_out <-- results (batched) <--'

* What a job writes to `sys.stdout`/`sys.stderr` is captured (`capture`) and also mirrored, as it is written,
  into the output region its pool passed (`outregion`: inherited by a forked worker, a descriptor named by
  PPFT_WORKER_OUTPUT_FD for an exec'd one), so that the text of a job that kills its worker is not lost.
* Channel hygiene comes first: the channel moves to private descriptors (close-on-exec) and fd 0 becomes
  /dev/null, fd 1 a copy of fd 2, so job code writing to fd 1 or 2 (`os.write(1, ...)`, a C printf) lands
  in the log, never in the protocol stream. The secret leaves `os.environ` before any job runs.
* The worker dies with its parent: PR_SET_PDEATHSIG on Linux (so even a worker stuck in a job goes), a
  check of the parent's pid right after it (the parent may have died before the call), and EOF.
* Jobs run one at a time, in arrival order. Results travel in batches (`ResultBatch`): the batch is sent
  when no job is left to run, when 1 ms has passed since its first result, or at 256 results; and before a
  job that may be slow (its function's last run took 1 ms or more, or it never ran) the worker sends what it
  holds and looks at its input, so a long job neither holds back results nor keeps a `Cancel` from reaching
  the jobs queued behind it. Input is otherwise read only when the queue runs dry or a batch goes out: no
  syscall per job.
* Bye or EOF ends the worker at once (exit 0): jobs still queued are dropped and held results are not sent,
  as the peer has closed the connection. A protocol error (a wrong secret included) is logged, exit 2.

It must never import anything heavy before the handshake (no dill, no cryptography: the pipe is authenticated
but unsealed), never write to fd 1 or 2 except through logging, and never run a job before the peer proved
the secret. The loop works on any pair of descriptors, so the same `serve` can run over a socket.

At the command line (`ppft-worker` with arguments, or without the pool's secret in the environment) `main`
hands over to `dialin`, the dial-in worker, whose help says what the command is for; a pool never passes
arguments. `--stdio` hands over to `stdio`, the remote side of an ssh node.
"""

from __future__ import annotations

import os
import sys
import time
from collections import deque

from ppft_protocol import (
    Bye,
    Cancel,
    Closed,
    Connection,
    Established,
    Event,
    FunctionBody,
    Heartbeat,
    Job,
    JobBatch,
    NodeInfo,
    ProtocolError,
    RemoteProtocolError,
    Result,
    ResultBatch,
    Role,
    StatsReply,
    StatsRequest,
    printable,
)
from ppft_protocol.bodies import BODY_BUDGET
from ppft_protocol.cpython import libc_function

from .reads import READ_SIZE
from .version import __version__

TYPE_CHECKING = False
if TYPE_CHECKING:
    import logging
    from typing import Protocol
else:
    Protocol = object  # `typing` costs a worker's start-up about 2 ms; the Protocol only serves the checker

__all__ = ["EXIT_OK", "EXIT_PARENT_GONE", "EXIT_PROTOCOL", "Runner", "main", "run_forked", "serve"]

EXIT_OK = 0
"""The peer said Bye or closed the channel."""

EXIT_PARENT_GONE = 1
"""The parent died before the worker could tie its life to it."""

EXIT_PROTOCOL = 2
"""A protocol error (wrong secret included), or bad usage."""

SECRET_ENV = "PPFT_WORKER_SECRET"
PARENT_ENV = "PPFT_PARENT_PID"
OUTPUT_FD_ENV = "PPFT_WORKER_OUTPUT_FD"
LOG_LEVEL_ENV = "PPFT_LOG_LEVEL"


_IOV_MAX = 512  # parts per writev call, well under every system's IOV_MAX
_BATCH_MAX = 256
_BATCH_DELAY = 0.001
_FAST = 0.001
_FAST_MAX = 4096  # digests remembered as fast; forgotten all at once beyond (new bodies keep coming)
_PR_SET_PDEATHSIG = 1
_M_TRIM_THRESHOLD = -1  # mallopt parameters (malloc.h)
_M_MMAP_THRESHOLD = -3
_SIGKILL = 9
_CANCELLED_TYPE = "concurrent.futures.CancelledError"
_CANCELLED_MESSAGE = "cancelled before it started"
_log: logging.Logger | None = None
_log_setup_deferred = False  # main() has yet to install its "ppft" log handler


def _logger() -> logging.Logger:
    """The "ppft.worker" logger, imported on first use: logging costs 3 ms of a start-up budget of 15."""
    global _log
    if _log is None:
        _finish_log_setup()
        import logging  # noqa: PLC0415

        _log = logging.getLogger("ppft.worker")
    return _log


def _finish_log_setup() -> None:
    """Install the handler `main` deferred: when something logs, once `logging` is loaded anyway (by the
    job runner), or once the first results are out; never on the way to the first result."""
    global _log_setup_deferred
    if _log_setup_deferred:
        _log_setup_deferred = False
        _setup_logging()


class Runner(Protocol):
    """What the loop needs of `ppft_worker.execute.JobRunner` (a stand-in can be passed to `serve`)."""

    def add_body(self, body: FunctionBody) -> None: ...

    def run(self, job: Job) -> Result: ...


def _write_all(fd: int, data: bytes | memoryview) -> None:
    """Write every byte of `data`, blocking: a partial write continues where it stopped."""
    n = os.write(fd, data)
    if n < len(data):
        view = memoryview(data)[n:]
        while view:
            view = view[os.write(fd, view) :]


def _write_parts(fd: int, parts: list[bytes | memoryview]) -> None:
    """Write `parts` in order, blocking, with `writev`: large payloads go out without being joined."""
    if len(parts) == 1:
        _write_all(fd, parts[0])
        return
    while parts:
        n = os.writev(fd, parts[:_IOV_MAX])
        done = 0
        while done < len(parts) and n >= len(parts[done]):
            n -= len(parts[done])
            done += 1
        parts = parts[done:]
        if n:
            parts[0] = memoryview(parts[0])[n:]


class _Serve:
    """One run of the worker loop over (fd_in, fd_out). State lives here; the hot loop keeps it in locals."""

    def __init__(self, fd_in: int, fd_out: int, conn: Connection, runner: Runner | None) -> None:
        self.fd_in = fd_in
        self.fd_out = fd_out
        self.conn = conn
        self.runner = runner
        self.queue: deque[Job] = deque()
        self.pending: list[Result] = []
        self.jobs_done = 0
        self.job_time = 0.0
        self.finished = False
        self.hello_sent = False
        self.fast: set[bytes] = set()  # digests whose last job took under _FAST seconds (`run`)
        self.output_region: object = None  # the pool's output region, mapped (a forked worker inherits it)
        self.output_fd = -1  # or its descriptor, mapped on the first write of a job (an exec'd worker)

    def send_hello(self) -> None:
        """Write our opening and Hello now, so the peer can proceed while this process finishes starting."""
        if not self.hello_sent:
            self.hello_sent = True
            _write_all(self.fd_out, self.conn.data_to_send())

    def flush(self) -> None:
        """Send the results held back, and anything else the connection has queued."""
        conn = self.conn
        pending = self.pending
        if pending:
            conn.send(ResultBatch(tuple(pending)))
            pending.clear()
        parts = conn.data_to_send_parts()
        if parts:
            _write_parts(self.fd_out, parts)

    def receive(self) -> None:
        """Read what the peer sent (waiting for it) and handle it; the rest of a large frame is read straight
        into the buffer the protocol assembles it in, saving a copy of its payload."""
        view = self.conn.receive_buffer()
        if view is None:
            self.feed(os.read(self.fd_in, READ_SIZE))
            return
        try:
            n = os.readv(self.fd_in, [view])
        finally:
            view.release()
        if n:
            self.handle(self.conn.receive_into(n))
        else:
            self.feed(b"")

    def feed(self, data: bytes) -> None:
        """Handle bytes from the peer: queue jobs, keep bodies, answer cancels and stats requests."""
        if not data:
            _logger().debug("peer closed the channel: exiting")
            self.finished = True
            return
        self.handle(self.conn.receive_data(data))

    def handle(self, events: list[Event]) -> None:
        """Act on the peer's events, then send what they made the connection queue."""
        conn = self.conn
        for event in events:
            if isinstance(event, JobBatch):
                self.queue.extend(event.jobs)
            elif isinstance(event, FunctionBody):
                runner = self.runner
                assert runner is not None  # made at Established, before any message can arrive
                runner.add_body(event)
                if len(self.fast) > _FAST_MAX:  # new digests come only with new bodies: bounded here
                    self.fast.clear()
            elif isinstance(event, Cancel):
                self.cancel(event.job_ids)
            elif isinstance(event, StatsRequest):
                self.flush()  # the counts below then match the results the peer has
                conn.send(StatsReply(self.jobs_done, self.job_time, 1, 1))
            elif isinstance(event, Established):
                self.established()
            elif isinstance(event, (Bye, Closed)):
                _logger().debug("peer closed the connection (%s): exiting", printable(event.reason))
                self.finished = True
                return
            elif not isinstance(event, (Heartbeat, NodeInfo)):
                raise RemoteProtocolError(
                    f"the pool sent {type(event).__name__}, which a worker never accepts: the peer is not "
                    f"a ppft client or server"
                )
        runner = self.runner
        if getattr(runner, "doomed", False):  # bodies forgotten by budget: keep those queued jobs need
            runner.release({job[1] for job in self.queue})  # type: ignore[union-attr]
        parts = conn.data_to_send_parts()
        if parts:
            _write_parts(self.fd_out, parts)

    def established(self) -> None:
        """The peer proved the secret: introduce ourselves, then load the job runner (after, not before,
        the handshake: a peer with the wrong secret costs no imports, and the pool's start-up is shorter)."""
        pid = os.getpid()
        self.conn.send(NodeInfo("worker", 1, __version__, f"{os.uname().nodename}:{pid}"))
        _write_all(self.fd_out, self.conn.data_to_send())
        if self.runner is None:
            from .capture import OutputCapture  # noqa: PLC0415
            from .execute import JobRunner  # noqa: PLC0415

            # version 2: bodies are kept within the budget the sender counts too (ppft_protocol.bodies)
            budget = BODY_BUDGET if self.conn.version >= 2 else None
            region = self.output_region
            self.runner = JobRunner(budget, OutputCapture(region, self.output_fd))  # type: ignore[arg-type]
            self.output_region, self.output_fd = None, -1
        if _log_setup_deferred and "logging" in sys.modules:
            _finish_log_setup()  # `logging` is loaded already: setting it up costs microseconds

    def cancel(self, job_ids: tuple[int, ...]) -> None:
        """Drop the listed jobs still queued, answering each at once; a started job reports normally."""
        queue = self.queue
        wanted = set(job_ids)
        if not queue or not wanted:
            return
        kept: list[Job] = []
        dropped = self.pending
        for job in queue:
            if job[0] in wanted:
                dropped.append(
                    Result(job[0], False, error_type=_CANCELLED_TYPE, error_message=_CANCELLED_MESSAGE)
                )
            else:
                kept.append(job)
        if len(kept) != len(queue):
            queue.clear()
            queue.extend(kept)
            self.flush()

    def run(self) -> None:
        """Until Bye or EOF: run the queued jobs, read when there is nothing to run, batch the results."""
        self.send_hello()
        fd_in = self.fd_in
        receive = self.receive
        flush = self.flush
        queue = self.queue
        popleft = queue.popleft
        pending = self.pending
        append = pending.append
        perf_counter = time.perf_counter
        import select  # noqa: PLC0415

        poller = select.poll()
        poller.register(fd_in, select.POLLIN)
        poll = poller.poll
        fast = self.fast
        fast_add = fast.add
        fast_discard = fast.discard
        done = self.jobs_done
        busy = self.job_time
        first = 0.0
        run = None
        looked = False  # input was just read: run the next job without looking again
        while True:
            if queue:
                job = popleft()
                digest = job[1]
                if digest not in fast and not looked:
                    # Maybe slow: send what we hold and take in what arrived (a Cancel for this job, say).
                    if pending:
                        flush()
                    if poll(0):
                        queue.appendleft(job)
                        self.jobs_done, self.job_time = done, busy
                        receive()
                        if self.finished:
                            return
                        looked = True
                        continue
                looked = False
                if run is None:
                    runner = self.runner
                    assert runner is not None
                    run = runner.run
                start = perf_counter()
                result = run(job)
                del job  # its args may be a view of the buffer the next large frame could reuse
                now = perf_counter()
                append(result)
                done += 1
                busy += result.wall_time
                if now - start < _FAST:  # the whole run, pickling included, not only the call
                    fast_add(digest)
                else:
                    fast_discard(digest)
                n = len(pending)
                if n == 1:
                    first = now
                elif n >= _BATCH_MAX or now - first >= _BATCH_DELAY:
                    flush()
                    if poll(0):
                        self.jobs_done, self.job_time = done, busy
                        receive()
                        if self.finished:
                            return
                continue
            # Nothing to run: take what already arrived without blocking; when nothing did, send the batch
            # and wait for the peer.
            self.jobs_done, self.job_time = done, busy
            if pending and not poll(0):
                flush()
            if _log_setup_deferred and done:
                _finish_log_setup()  # the first results are out: the worker has time for it now
            receive()
            if self.finished:
                return


def serve(
    chan_in: int,
    chan_out: int,
    secret: bytes | str,
    *,
    role: Role = Role.SERVER,
    allow_plain: bool = True,
    runner: Runner | None = None,
) -> int:
    """Run the worker loop over the descriptors `chan_in` / `chan_out` (the same socket twice works too);
    returns the exit code: `EXIT_OK` after Bye or EOF, `EXIT_PROTOCOL` after a protocol error (logged).

    `role`: SERVER for a pipe from a pool; a worker that dials a ppserver would be the CLIENT.
    `runner`: the job runner; left out, a `JobRunner` is made once the peer is authenticated."""
    return _serve(_Serve(chan_in, chan_out, Connection(role, secret, allow_plain=allow_plain), runner))


def _serve(state: _Serve) -> int:
    try:
        state.run()
    except ProtocolError as exc:
        _logger().error("protocol error on the channel to the pool: %s; exiting", printable(exc, 1000))
        try:
            leftover = state.conn.data_to_send()  # a wrong secret leaves one AuthFailed to deliver
            if leftover:
                _write_all(state.fd_out, leftover)
        except OSError:
            pass  # the peer is gone as well: nothing more to tell it
        return EXIT_PROTOCOL
    except (BrokenPipeError, ConnectionResetError) as exc:
        _logger().debug("the pool closed the channel (%s): exiting", exc)
    return EXIT_OK


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
            _logger().warning("cannot set PR_SET_PDEATHSIG (%s): relying on EOF to notice the parent", exc)
        else:
            if failed:
                _logger().warning("prctl(PR_SET_PDEATHSIG) failed (%s): relying on EOF", failed)
    return os.getppid() == parent_pid


def _keep_freed_memory() -> None:
    """Have glibc's malloc keep large freed blocks for reuse instead of handing them back to the kernel.

    By default a block of 128 KiB and more (up to 32 MiB, as the threshold adapts) is mapped fresh and
    unmapped when freed, and the top of the heap is trimmed beyond twice that: a worker echoing 16 MiB
    payloads then takes thousands of page faults per job, for the args it unpickles and the value it pickles,
    more time than copying the bytes. With blocks up to 64 MiB taken from the heap, and up to 128 MiB of
    freed memory kept at its top, the next job's payload reuses pages already there. Best effort: a C
    library without `mallopt` (or not glibc) is left as it is.
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

    Through `ppft_protocol.cpython.libc_function` (the C half of `ctypes`: `ctypes` itself costs a worker's
    start-up about 1 ms more, on its way to the first result)."""
    prctl = libc_function("prctl")
    if prctl is None:
        return "no prctl found in the C library (or no ctypes)"
    return "" if prctl(_PR_SET_PDEATHSIG, _SIGKILL, 0, 0, 0) == 0 else "it returned -1"


def _setup_logging() -> None:
    """Log records of "ppft.*" to stderr, naming this worker's pid; level from PPFT_LOG_LEVEL."""
    import logging  # noqa: PLC0415

    root = logging.getLogger("ppft")
    if root.handlers:
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        logging.Formatter("%(asctime)s ppft-worker[%(process)d] %(levelname)s %(name)s: %(message)s")
    )
    root.addHandler(handler)
    root.propagate = False
    wanted = os.environ.get(LOG_LEVEL_ENV, "WARNING").strip().upper()
    level = int(wanted) if wanted.isdigit() else logging.getLevelName(wanted)
    if isinstance(level, int):
        root.setLevel(level)
    else:
        root.setLevel(logging.WARNING)
        _logger().warning(
            "%s=%r is not a logging level (DEBUG, INFO, WARNING, ...): using WARNING", LOG_LEVEL_ENV, wanted
        )


def main(argv: list[str] | None = None) -> int:
    """Entry point of `python -m ppft_worker`; returns the process exit code."""
    args = sys.argv[1:] if argv is None else argv
    if "--stdio" in args:  # the remote side of an ssh node (ppft_worker.stdio)
        from .stdio.command import main as stdio_main  # noqa: PLC0415 - only ssh nodes pay for it

        return stdio_main(args)
    if args or SECRET_ENV not in os.environ:
        # A person at the command line (a pool always passes its secret and no argument): the dial-in
        # command, whose help says what ppft-worker is for; a bare `ppft-worker` gets its usage.
        from . import dialin  # noqa: PLC0415 - only dial-in workers pay for it

        if not args:
            parser = dialin.make_parser()
            sys.stderr.write(
                f"{parser.format_usage()}\n{dialin.DESCRIPTION}\n{dialin.EXAMPLE}\n{dialin.NOT_BY_HAND}\n"
                f"ppft-worker: error: --connect HOST:PORT is required (ppft-worker -h tells more)\n"
            )
            return EXIT_PROTOCOL
        return dialin.main(args)
    chan_in, chan_out = _take_channel()
    secret_hex = os.environ.pop(SECRET_ENV, "")
    parent = os.environ.pop(PARENT_ENV, "")
    output_fd = os.environ.pop(OUTPUT_FD_ENV, "")
    if output_fd.isdigit():
        try:
            os.set_inheritable(int(output_fd), False)  # the job's own child processes get none of it
        except OSError:
            output_fd = ""  # not open after all: jobs' output then leaves only in their results
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
    return _run(
        chan_in,
        chan_out,
        secret,
        int(parent) if parent.isdigit() else None,
        output_fd=int(output_fd) if output_fd.isdigit() else -1,
    )


def run_forked(secret: bytes, parent_pid: int, output_region: object = None) -> int:
    """Entry of a worker forked by its pool (`ppft_worker.forkstart`), which left the child as an exec'd
    worker starts: the channel on fds 0 and 1, fd 2 inherited, no other descriptor. The secret, the
    parent's pid and the output region (an inherited mapping) come in memory rather than in the environment;
    the rest is `main`'s."""
    chan_in, chan_out = _take_channel()
    return _run(chan_in, chan_out, secret, parent_pid, output_region=output_region)


def _run(
    chan_in: int,
    chan_out: int,
    secret: bytes,
    parent: int | None,
    *,
    output_region: object = None,
    output_fd: int = -1,
) -> int:
    """Greet the pool, tie this process to its parent, serve; returns the exit code."""
    state = _Serve(chan_in, chan_out, Connection(Role.SERVER, secret, allow_plain=True), None)
    state.output_region = output_region
    state.output_fd = output_fd
    global _log_setup_deferred
    _log_setup_deferred = True  # see _finish_log_setup: logging costs 3 ms on the way to the first result
    try:
        state.send_hello()  # the pool reads it while we finish starting below
        _keep_freed_memory()
        if parent is not None and not _tie_to_parent(parent):
            _logger().debug("parent %s died before the worker started: exiting", parent)
            return EXIT_PARENT_GONE
        return _serve(state)
    except (BrokenPipeError, ConnectionResetError):
        return EXIT_OK  # the pool went away while we were starting
    except KeyboardInterrupt:
        return 130  # Ctrl-C reached the whole process group; the pool reports its jobs
