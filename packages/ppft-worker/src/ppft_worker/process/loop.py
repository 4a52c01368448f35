"""The worker loop: a protocol endpoint on two file descriptors, running jobs one at a time, in order.

    pool --JobBatch / FunctionBody / Cancel / StatsRequest--> chan_in --> deque of jobs --> JobRunner.run
    pool <--ResultBatch / StatsReply / NodeInfo----------------- chan_out <-- results (batched) <--'

* Jobs run one at a time, in arrival order. Results travel in batches (`ResultBatch`): the batch is sent
  when no job is left to run, when `_BATCH_DELAY` has passed since its first result, or at `_BATCH_MAX`
  results; and before a job that may be slow (its function's last run took `_FAST` or more, or it never ran)
  the worker sends what it holds and looks at its input, so a long job neither holds back results nor keeps
  a `Cancel` from reaching the jobs queued behind it. Input is otherwise read only when the queue runs dry or
  a batch goes out: no syscall per job (`scripts/bench --only tiny,latency` measures both ends of it).
* Bye or EOF ends the loop at once (`EXIT_OK`): jobs still queued are dropped and held results are not
  sent, as the peer has closed the connection. A protocol error (a wrong secret included) is logged, and
  ends it with `EXIT_PROTOCOL`.
* The job runner (`execute.JobRunner`) is loaded once the peer proved the secret, never before: a peer with
  the wrong secret costs no imports, and the pool reads our Hello while we load it.

The loop works on any pair of descriptors (the same socket twice too): `serve` runs it over a socket as well
as over the pool's pipes (the process around it, its descriptors and its parent, is `ppft_worker.process`'s).
It must never run a job before the peer proved the secret, never write to a descriptor but its channel
(logging apart), and never import anything heavy on its way to the first result: `logging` waits until
something is logged or the first results are out (`defer_log_setup`).
"""

from __future__ import annotations

import os
import sys
import time
from collections import deque

from ppft_protocol import (
    READ_SIZE,
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
    Put,
    PutRefused,
    Release,
    RemoteProtocolError,
    Result,
    ResultBatch,
    Role,
    StatsReply,
    StatsRequest,
    printable,
)
from ppft_protocol.bodies import BODY_BUDGET

from ..version import __version__

TYPE_CHECKING = False
if TYPE_CHECKING:
    import logging
    from typing import Protocol
else:
    Protocol = object  # `typing` is heavy on a worker's way to its first result; Protocol only serves mypy

__all__ = [
    "EXIT_OK",
    "EXIT_PROTOCOL",
    "LOG_LEVEL_ENV",
    "Runner",
    "WorkerLoop",
    "defer_log_setup",
    "logger",
    "run_loop",
    "serve",
    "write_all",
]

EXIT_OK = 0
"""The peer said Bye or closed the channel."""

EXIT_PROTOCOL = 2
"""A protocol error (wrong secret included), or bad usage."""

LOG_LEVEL_ENV = "PPFT_LOG_LEVEL"

_IOV_MAX = 512  # parts per writev call, well under every system's IOV_MAX
_BATCH_MAX = 256
_BATCH_DELAY = 0.001
_FAST = 0.001
_FAST_MAX = 4096  # digests remembered as fast; forgotten all at once beyond (new bodies keep coming)
_CANCELLED_TYPE = "concurrent.futures.CancelledError"  # ppft_worker.runtime.CANCELLED_TYPE, not imported here
_CANCELLED_MESSAGE = "cancelled before it started"
_log: logging.Logger | None = None
_log_setup_deferred = False  # the entry has yet to install its "ppft" log handler


def logger() -> logging.Logger:
    """The "ppft.worker" logger, imported on first use: `logging` is among the heaviest imports a worker could
    make on its way to its first result (`scripts/bench --only startup`)."""
    global _log
    if _log is None:
        _finish_log_setup()
        import logging  # noqa: PLC0415

        _log = logging.getLogger("ppft.worker")
    return _log


def defer_log_setup() -> None:
    """Install the worker's "ppft" log handler later (`_finish_log_setup`), not on the way to a result."""
    global _log_setup_deferred
    _log_setup_deferred = True


def _finish_log_setup() -> None:
    """Install the handler the entry deferred: when something logs, once `logging` is loaded anyway (by the
    job runner), or once the first results are out; never on the way to the first result."""
    global _log_setup_deferred
    if _log_setup_deferred:
        _log_setup_deferred = False
        _setup_logging()


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
        logger().warning(
            "%s=%r is not a logging level (DEBUG, INFO, WARNING, ...): using WARNING", LOG_LEVEL_ENV, wanted
        )


class Runner(Protocol):
    """What the loop needs of `execute.JobRunner` (a stand-in can be passed to `serve`)."""

    def add_body(self, body: FunctionBody) -> None: ...

    def run(self, job: Job) -> Result: ...


def write_all(fd: int, data: bytes | memoryview) -> None:
    """Write every byte of `data`, blocking: a partial write continues where it stopped."""
    n = os.write(fd, data)
    if n < len(data):
        view = memoryview(data)[n:]
        while view:
            view = view[os.write(fd, view) :]


def _write_parts(fd: int, parts: list[bytes | memoryview]) -> None:
    """Write `parts` in order, blocking, with `writev`: large payloads go out without being joined."""
    if len(parts) == 1:
        write_all(fd, parts[0])
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


class WorkerLoop:
    """One run of the worker loop over (fd_in, fd_out). State lives here; the hot loop keeps it in locals,
    and puts `jobs_done` and `job_time` back before it sends results or reads (a `flush` or a `receive`
    sees them as they are)."""

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
        self.released = False  # refs were released: forget them once the queue is empty (`refs`)
        self.fast: set[bytes] = set()  # digests whose last job took under _FAST seconds (`run`)
        self.output_region: object = None  # the pool's output region, mapped (a forked worker inherits it)
        self.output_fd = -1  # or its descriptor, mapped on the first write of a job (an exec'd worker)
        self.segments = False  # large values go to the pool in shared segments (`ppft_worker.mapped`)

    def send_hello(self) -> None:
        """Write our opening and Hello now, so the peer can proceed while this process finishes starting."""
        if not self.hello_sent:
            self.hello_sent = True
            write_all(self.fd_out, self.conn.data_to_send())

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
            logger().debug("peer closed the channel: exiting")
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
                logger().debug("peer closed the connection (%s): exiting", printable(event.reason))
                self.finished = True
                return
            elif isinstance(event, (Put, Release, PutRefused)):
                self.refs(event)
            elif not isinstance(event, (Heartbeat, NodeInfo)):
                raise RemoteProtocolError(
                    f"the pool sent {type(event).__name__}, which a worker never accepts: the peer is not "
                    f"a ppft client or server"
                )
        if self.released and not self.queue:  # refs released: no queued job needs them any more
            self.released = False
            from . import refs  # noqa: PLC0415

            refs.forget()
        runner = self.runner
        if getattr(runner, "doomed", False):  # bodies forgotten by budget: keep those queued jobs need
            runner.release({job[1] for job in self.queue})  # type: ignore[union-attr]
        parts = conn.data_to_send_parts()
        if parts:
            _write_parts(self.fd_out, parts)

    def refs(self, event: Put | Release | PutRefused) -> None:
        """Hold, release or learn the refusal of a `put()` ref (`refs`): only workers sent refs import it."""
        from . import refs  # noqa: PLC0415

        if isinstance(event, Put):
            refs.hold(event.ref_id, event.data)
        elif isinstance(event, Release):
            refs.release(event.ref_ids)
            self.released = True
        else:
            refs.refuse(event.ref_id, event.reason)

    def established(self) -> None:
        """The peer proved the secret: introduce ourselves, then load the job runner (after, not before,
        the handshake: a peer with the wrong secret costs no imports, and the pool's start-up is shorter)."""
        pid = os.getpid()
        self.conn.send(NodeInfo("worker", 1, __version__, f"{os.uname().nodename}:{pid}"))
        write_all(self.fd_out, self.conn.data_to_send())
        if self.runner is None:
            from .capture import OutputCapture  # noqa: PLC0415
            from .execute import JobRunner  # noqa: PLC0415

            # version 2: bodies are kept within the budget the sender counts too (ppft_protocol.bodies)
            budget = BODY_BUDGET if self.conn.version >= 2 else None
            region = self.output_region
            capture = OutputCapture(region, self.output_fd)  # type: ignore[arg-type]
            # version 2: values with large buffers travel out of band (ppft_protocol.buffers)
            buffers = self.conn.version >= 2
            self.runner = JobRunner(budget, capture, buffers=buffers, segments=buffers and self.segments)
            self.output_region, self.output_fd = None, -1
        if _log_setup_deferred and "logging" in sys.modules:
            _finish_log_setup()  # `logging` is loaded already (by the job): no import left to defer

    def cancel(self, job_ids: tuple[int, ...]) -> None:
        """Drop the listed jobs still queued, answering each at once; a started job reports normally."""
        segments = sys.modules.get("ppft_worker.mapped")
        if segments is not None:  # a finished job's result segment: the pool has mapped it
            segments.release(job_ids)
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
                    self.jobs_done, self.job_time = done, busy
                    if pending:
                        flush()
                    if poll(0):
                        queue.appendleft(job)
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
                # A buffered pickle (`Pickled`): its buffers are the value's memory, out before a job runs; a
                # mapped one (`mapped.MappedField`, a bytes subclass): out at once, the last of its frame,
                # where the pool looks for it. Every other value is plain bytes.
                if result[2].__class__ is not bytes:
                    self.jobs_done, self.job_time = done, busy
                    flush()
                if now - start < _FAST:  # the whole run, pickling included, not only the call
                    fast_add(digest)
                else:
                    fast_discard(digest)
                n = len(pending)
                if n == 1:
                    first = now
                elif n >= _BATCH_MAX or now - first >= _BATCH_DELAY:
                    self.jobs_done, self.job_time = done, busy
                    flush()
                    if poll(0):
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
    return run_loop(WorkerLoop(chan_in, chan_out, Connection(role, secret, allow_plain=allow_plain), runner))


def run_loop(state: WorkerLoop) -> int:
    try:
        state.run()
    except ProtocolError as exc:
        logger().error("protocol error on the channel to the pool: %s; exiting", printable(exc, 1000))
        try:
            leftover = state.conn.data_to_send()  # a wrong secret leaves one AuthFailed to deliver
            if leftover:
                write_all(state.fd_out, leftover)
        except OSError:
            pass  # the peer is gone as well: nothing more to tell it
        return EXIT_PROTOCOL
    except (BrokenPipeError, ConnectionResetError) as exc:
        logger().debug("the pool closed the channel (%s): exiting", exc)
    return EXIT_OK
