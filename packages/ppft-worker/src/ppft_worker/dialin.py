"""Dial-in workers: `ppft-worker --connect HOST:PORT [-w N] [-s SECRET] [--retry-for SECONDS]`.

Worker processes on a machine that cannot accept inbound connections (a batch-scheduler job, a laptop
behind NAT) dial out to a ppserver and add their capacity to it while connected. This process holds the
connection and a local `WorkerPool`: jobs come in over the connection, results go back. When it leaves
(SIGTERM, Ctrl-C, the batch job ending), it says Bye, and the ppserver requeues whatever it held at once.

When to give up (`main`):
* the ppserver says it is stopping (its Bye, on SIGTERM, SIGINT or SIGHUP): leave at once, status 0,
  so a batch job's dial-ins end with their hub;
* the ppserver cannot be reached (not listening yet, unknown host) or the connection is lost without a word
  (the ppserver was killed, the network broke): try again with backoff (0.5 s doubling to 10 s) for
  `--retry-for` seconds from the first failure (default 60, `forever` for no limit, 0 for none), then exit
  with status 1 and a line saying what failed and what to do;
* a refusal that retrying cannot cure (wrong secret, a ppft 1.x peer, no common protocol version): exit
  with status 1 at once.

Admission: the connection says it is a dial-in worker (Hello flag WORKER, protocol version 2) and proves the
ppserver's workers secret (`resolve_workers_secret`: `-s`, `--secret-file`, PPFT_WORKERS_SECRET, then the
cluster secret for a ppserver started with --accept-workers). A ppserver that admits no workers says so
(`WORKER_REFUSED` in its Bye): that is a refusal retrying cannot cure, logged as an error, status 1. With
version 2 a `Cancel` from the ppserver names jobs whose client left: they are stopped, running or not, and
answered as cancelled. Limits on jobs (version 2): a `JobLimits` gives the jobs of the next `JobBatch` their
time limits, which the pool enforces (`pool.limits`), and a `Terminate` stops jobs as that `Cancel` does.
"""

from __future__ import annotations

import argparse
import itertools
import logging
import signal
import socket
import sys
import threading
import time
from collections import deque
from types import FrameType

from ppft_protocol import (
    Cancel,
    Connection,
    Established,
    Event,
    FunctionBody,
    JobBatch,
    JobLimits,
    LiveOutput,
    NodeInfo,
    PPFTError,
    Put,
    PutRefused,
    Release,
    Result,
    ResultBatch,
    Role,
    StatsReply,
    StatsRequest,
    Terminate,
    WatchOutput,
)

from .oob import plain_result
from .pool import WorkerPool
from .pythons import THIS_PYTHON
from .runtime import (
    TERMINATED_MESSAGE,
    WORKER_REFUSED,
    BodyTable,
    Loop,
    RefBook,
    ServedTask,
    Stream,
    Task,
    apply_limits,
    count_option,
    detect_ncpus,
    memory_option,
    note_limits,
    offer_aes_gcm,
    resolve_secret,
    resolve_workers_secret,
    take_jobs,
    withdraw,
)
from .version import __version__

__all__ = [
    "DEFAULT_RETRY_FOR",
    "DESCRIPTION",
    "EXAMPLE",
    "NOT_BY_HAND",
    "DialIn",
    "main",
    "make_parser",
]

log = logging.getLogger("ppft.dialin")

DEFAULT_RETRY_FOR = 60.0
"""Seconds a dial-in keeps trying to reach its ppserver, from the first failure, before it gives up."""

_FIRST_BACKOFF = 0.5
_MAX_BACKOFF = 10.0
_PERMANENT = ("wrong secret", "legacy ppft 1.x peer", "protocol mismatch")  # see describe_protocol_error


_GIVEN_UP = "cancelled: the ppserver gave the job up (its client left)"


class DialIn:
    """One outbound connection to a ppserver, serving its jobs with `workers` local worker processes."""

    def __init__(
        self, host: str, port: int, secret: bytes, workers: int, *, memory_limit: int | None = None,
        max_jobs_per_worker: int | None = None,
    ) -> None:  # fmt: skip
        self.host = host
        self.port = port
        self.workers = workers
        self.exit_code = 0
        self.connected = False  # the ppserver accepted us at least once (it sent its NodeInfo)
        self.stopped = False  # left on purpose (signal): do not reconnect
        self.hub_left = False  # the ppserver said it is stopping (its Bye)
        self.refused = False  # the ppserver does not admit this dial-in worker (its Bye says so)
        self.failure = ""  # why the connection failed or ended, for the log
        self.said = ""  # what the ppserver said when it left (its Bye), escaped
        self.loop = Loop()
        self.queue: deque[Task] = deque()
        self.pool = WorkerPool(
            self.loop, workers, on_results=self._results, on_requeue=self._requeue, memory_limit=memory_limit,
            max_jobs_per_worker=max_jobs_per_worker, segments=True,
        )  # fmt: skip
        if self.pool.shared is not None:
            self.pool.shared.relay = True  # it passes its workers' values on to its ppserver
        self.pool.name = f"dial-in worker {socket.gethostname()}"
        self.pool.ids_known = False  # its job ids are the ppserver's, not the client's
        self.pool.refs = RefBook(None, copies=workers)  # `put()` objects, for the workers
        self._limits: dict[int, float] = {}  # time limits (`JobLimits`) of the jobs of the next JobBatch
        self.loop.on_idle = self._dispatch
        self._secret = secret
        self._bodies = BodyTable(f"ppserver {host}:{port}")  # checked, bounded on version 2
        self._ids = itertools.count(1)
        self._stream: Stream | None = None
        self._version = 0  # the protocol version of the connection, once established

    def run(self) -> int:
        """Connect, serve until the ppserver or a signal ends it; returns the exit code."""
        try:
            sock = socket.create_connection((self.host, self.port), timeout=10)
        except OSError as exc:
            self.failure = f"cannot connect: {exc.strerror or exc}"
            return 1
        conn = Connection(
            Role.CLIENT, self._secret, aes_gcm=offer_aes_gcm(), comment=f"ppft {__version__} dial-in worker",
            worker=True,
        )  # fmt: skip
        self._stream = Stream(
            self.loop, sock, conn, peer=f"ppserver {self.host}:{self.port}", on_event=self._event,
            on_close=self._closed,
        )  # fmt: skip
        self.pool.start()
        try:
            self.loop.run_forever()
        finally:
            self.pool.close()
            self.loop.close()
        return self.exit_code

    def _dispatch(self) -> None:
        if self.queue:
            self.pool.dispatch(self.queue)

    def stop(self, reason: str = "dial-in worker is leaving") -> None:
        """Leave: tell the ppserver (it requeues our jobs at once) and stop. Safe from signal handlers."""

        self.stopped = True

        def leave() -> None:
            if self._stream is not None:
                self._stream.close(reason)
            self.loop.stop()

        self.loop.call_soon_threadsafe(leave)

    def _event(self, event: Event) -> None:
        stream = self._stream
        assert stream is not None
        if isinstance(event, Established):
            self._version = event.version
            stream.send(NodeInfo("worker", self.workers, __version__, socket.gethostname(), THIS_PYTHON))
        elif isinstance(event, NodeInfo):
            if not self.connected:
                log.info("serving ppserver %s:%d with %d worker(s)", self.host, self.port, self.workers)
            self.connected = True
        elif isinstance(event, FunctionBody):
            self._bodies.add(event, stream.conn.version)  # a refused body fails its jobs, naming why
        elif isinstance(event, JobBatch):
            tasks, unknown = take_jobs(self._bodies, event, self._ids, stream)
            if self._limits:
                apply_limits(self._limits, tasks)
            self.queue.extend(tasks)
            if unknown:
                stream.send(ResultBatch(tuple(unknown)))
        elif isinstance(event, (Put, Release, PutRefused)):  # `put()` refs: held here, sent to the workers
            answer = self.pool.refs_from_upstream(event)
            if answer is not None:
                stream.send(answer)
        elif isinstance(event, StatsRequest):
            stream.send(StatsReply(self.pool.jobs_done, self.pool.job_time, self.workers, 1))
        elif isinstance(event, Cancel):
            self._cancel(event.job_ids)
        elif isinstance(event, JobLimits):
            note_limits(self._limits, event.limits)
        elif isinstance(event, Terminate):
            self._cancel(event.job_ids, TERMINATED_MESSAGE)
        elif isinstance(event, WatchOutput):
            self._watch_output(event.on)

    def _cancel(
        self,
        job_ids: tuple[int, ...],
        message: str = "cancelled: the ppserver gave the job up (its client left)",
    ) -> None:
        """Jobs the ppserver gave up: those still queued here are dropped; with version 2 those in flight
        are stopped too (their worker killed and replaced, or told to skip them). Each is answered as
        cancelled."""
        answer = withdraw(self.queue, job_ids, message, self.pool.abandon if self._version >= 2 else None)
        stream = self._stream
        if answer is not None and stream is not None:
            stream.send(answer)

    def _watch_output(self, on: bool) -> None:
        self.pool.watch_output(self._live_output if on else None)

    def _live_output(self, pieces: list[tuple[Task, int, int, str]]) -> None:
        """What running jobs wrote, to the ppserver (which watches), under its job ids."""
        stream = self._stream
        if stream is not None and not stream.closed:
            entries = [(task.client_id, s, o, t) for task, s, o, t in pieces]  # type: ignore[attr-defined]
            stream.send(LiveOutput(tuple(entries)))

    def _results(self, pairs: list[tuple[Task, Result]]) -> None:
        stream = self._stream
        if stream is not None and not stream.closed:
            results = []
            for task, result in pairs:
                served: ServedTask = task  # type: ignore[assignment]
                results.append(served.result_for_peer(result))
            if stream.conn.version < 2:  # a ppserver of ppft 2.0.0: buffered values as plain pickles
                results = [plain_result(result) for result in results]
            stream.send(ResultBatch(tuple(results)))

    def _requeue(self, tasks: list[Task]) -> None:
        self.queue.extendleft(reversed(tasks))

    def _closed(self, reason: str) -> None:
        stream = self._stream
        self.failure = reason
        if stream is not None and stream.bye_reason is not None:
            self.said = stream.bye_reason
            if WORKER_REFUSED in stream.bye_reason:
                self.refused = True  # not admitted: trying again cannot cure it
                self.failure = stream.bye_reason
                self.exit_code = 1
            else:
                self.hub_left = True  # it told us why it left: a stop, not a failure
        else:
            self.exit_code = 1
        self.loop.stop()

    @property
    def permanent(self) -> bool:
        """Whether the ppserver refused us for a reason that trying again cannot cure."""
        return self.refused or (not self.connected and self.failure.startswith(_PERMANENT))

    @property
    def address(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


DESCRIPTION = """\
Dial in to a ppserver and add this machine's worker processes to it, for machines that cannot accept
connections (batch-scheduler jobs, machines behind NAT): the worker connects out, and clients connect to
the ppserver only. It serves until the ppserver stops (then it exits with status 0) or it is stopped
(SIGTERM, Ctrl-C).
"""

EXAMPLE = """\
example:
  ppserver -p 35000 -w 0 --accept-workers           # on the head node: a hub that runs no job itself
  ppft-worker --connect head:35000 -w 16            # on each compute machine, with the same secret
  python -m ppft_worker --connect head:35000 -w 16  # the same program
"""

_MORE = """\
The secret is found as ppserver finds it: -s, --secret-file, $PPFT_SECRET, then ~/.ppft/secret.
A ppserver that cannot be reached, or that is lost without saying it stops, is tried again for --retry-for
seconds; then ppft-worker exits with status 1. A wrong secret exits with status 1 at once.
"""

NOT_BY_HAND = """\
(Without --connect, ppft-worker is the worker process that a ppft pool starts itself, with the pool's
secret in PPFT_WORKER_SECRET; that one is not run by hand.)
"""


def _retry_for(text: str) -> float:
    if text.strip().lower() in ("forever", "inf", "infinity"):
        return float("inf")
    try:
        seconds = float(text)
    except ValueError:
        seconds = -1.0
    if not seconds >= 0:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a number of seconds >= 0 (or 'forever'); 0 gives up at the first failure"
        )
    return seconds


def _workers(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        n = 0
    if n < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of worker processes >= 1")
    return n


def make_parser() -> argparse.ArgumentParser:
    """The command line of `ppft-worker --connect`: its help is what `ppft-worker -h` prints."""
    parser = argparse.ArgumentParser(
        prog="ppft-worker",
        usage="ppft-worker --connect HOST:PORT [-w N] [-s SECRET | --secret-file PATH] [--retry-for SECONDS] "
        "[-d]",
        description=DESCRIPTION,
        epilog=f"{EXAMPLE}\n{_MORE}{NOT_BY_HAND}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--connect", metavar="HOST:PORT", help="the ppserver to serve ([IPv6]:PORT for IPv6)")
    parser.add_argument(
        "-w", "--workers", type=_workers, default=None, metavar="N",
        help="worker processes (default: the CPUs this process may use)",
    )  # fmt: skip
    parser.add_argument("-s", "--secret", default=None, help="the cluster's secret (visible in ps)")
    parser.add_argument("--secret-file", default=None, metavar="PATH", help="read the secret from this file")
    parser.add_argument(
        "--retry-for", type=_retry_for, default=DEFAULT_RETRY_FOR, metavar="SECONDS",
        help=f"keep trying an unreachable or lost ppserver this long (default {DEFAULT_RETRY_FOR:.0f}; "
        "'forever'; 0: no retry)",
    )  # fmt: skip
    parser.add_argument(
        "--worker-memory-limit", type=memory_option, default=None, metavar="SIZE",
        help="stop a worker whose resident memory passes SIZE (2GiB, 512MiB); its job fails saying so",
    )  # fmt: skip
    parser.add_argument(
        "--max-jobs-per-worker", type=count_option, default=None, metavar="N",
        help="replace a worker after N jobs",
    )  # fmt: skip
    parser.add_argument("--once", action="store_true", help="the same as --retry-for 0")
    parser.add_argument("-d", "--debug", action="store_true", help="log debug messages")
    return parser


def main(argv: list[str]) -> int:
    """`ppft-worker --connect HOST:PORT ...`; returns the exit code."""
    parser = make_parser()
    args, unknown = parser.parse_known_args(argv)
    if unknown:
        parser.error(f"unrecognized arguments: {' '.join(unknown)} (ppft-worker -h lists the options)")
    if args.connect is None:
        parser.error("--connect HOST:PORT is required (ppft-worker -h tells more)")
    logging.basicConfig(
        level=logging.DEBUG if args.debug else logging.INFO,
        format="%(asctime)s ppft-worker[%(process)d] %(levelname)s %(message)s",
    )
    host, sep, port_text = args.connect.strip().rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not sep or not host or not port_text.isdigit() or not 0 < int(port_text) <= 65535:
        sys.stderr.write(
            f"ppft-worker: --connect wants HOST:PORT (e.g. head:35000, [::1]:35000), got {args.connect!r}\n"
        )
        return 2
    workers = args.workers if args.workers is not None else detect_ncpus()
    try:
        secret = resolve_workers_secret(args.secret, secret_file=args.secret_file) or resolve_secret()
    except PPFTError as exc:
        sys.stderr.write(f"ppft-worker: {exc}\n")
        return 2
    retry_for = 0.0 if args.once else args.retry_for
    stopping = threading.Event()
    current: list[DialIn] = []

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stopping.set()
        if current:
            current[-1].stop(f"dial-in worker stopped by {signal.Signals(signum).name}")

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    limits = {"memory_limit": args.worker_memory_limit, "max_jobs_per_worker": args.max_jobs_per_worker}
    return _serve(host, int(port_text), secret, workers, retry_for, stopping, current, limits)


def _serve(
    host: str, port: int, secret: bytes, workers: int, retry_for: float, stopping: threading.Event,
    current: list[DialIn], limits: dict[str, int | None] | None = None,
) -> int:  # fmt: skip
    """Dial, serve, and dial again after a failure until `retry_for` seconds have passed since the first."""
    backoff = _FIRST_BACKOFF
    failing_since: float | None = None
    last_failure = ""
    while True:
        dialin = DialIn(host, port, secret, workers, **(limits or {}))
        current.append(dialin)
        code = dialin.run()
        current.pop()
        where = f"ppserver {dialin.address}"
        if dialin.stopped or stopping.is_set():
            log.info("left %s", where)
            return 0
        if dialin.hub_left:
            log.info("%s stopped (%s): leaving", where, dialin.said or "it gave no reason")
            return 0
        if dialin.permanent:
            log.error("%s: %s; not retrying", where, dialin.failure)
            return code or 1
        now = time.monotonic()
        if dialin.connected or failing_since is None:
            failing_since, backoff, last_failure = now, _FIRST_BACKOFF, ""
        left = failing_since + retry_for - now
        if left <= 0:
            waited = f" after {now - failing_since:.0f} s" if retry_for else ""
            log.error(
                "gave up on %s%s: %s; start the ppserver first (ppserver -P writes its pid file once it "
                "listens), check HOST:PORT, or keep trying longer with --retry-for SECONDS",
                where, waited, dialin.failure,
            )  # fmt: skip
            return 1
        if dialin.failure != last_failure:
            limit = "without limit" if retry_for == float("inf") else f"for up to {retry_for:.0f} s"
            verb = "lost" if dialin.connected else "cannot reach"
            log.warning("%s %s: %s; trying again %s (--retry-for)", verb, where, dialin.failure, limit)
            last_failure = dialin.failure
        else:
            log.debug("%s: %s; trying again in %.1f s", where, dialin.failure, min(backoff, left))
        if stopping.wait(min(backoff, left)):
            log.info("left %s", where)
            return 0
        backoff = min(_MAX_BACKOFF, backoff * 2)
