"""Dial-in workers: `python -m ppft_worker --connect HOST:PORT [-w N] [-s SECRET]`.

Worker processes on a machine that cannot accept inbound connections (a batch-scheduler job, a laptop
behind NAT) dial out to a ppserver and add their capacity to it while connected. This process holds the
connection and a local `WorkerPool`: jobs come in over the connection, results go back. When it leaves
(SIGTERM, Ctrl-C, the batch job ending), it says Bye, and the ppserver requeues whatever it held at once.
When the ppserver is not there yet, or goes away, it tries again with backoff (1 s doubling to 30 s), so
dial-ins can be started before their ppserver and survive its restart; `--once` exits instead.

Admission: the connection says it is a dial-in worker (Hello flag WORKER, protocol version 2) and proves the
ppserver's workers secret (`resolve_workers_secret`: `-s`, `--secret-file`, PPFT_WORKERS_SECRET, then the
cluster secret for a ppserver started with --accept-workers). A ppserver that admits no workers says so
(`WORKER_REFUSED` in its Bye), and this process logs it as an error. With version 2 a `Cancel` from the
ppserver names jobs whose client left: they are stopped, running or not, and answered as cancelled.
"""

from __future__ import annotations

import argparse
import itertools
import logging
import signal
import socket
import sys
import threading
from collections import deque
from types import FrameType
from typing import cast

from ppft_protocol import (
    Cancel,
    Connection,
    Established,
    Event,
    FunctionBody,
    JobBatch,
    LiveOutput,
    NodeInfo,
    PPFTError,
    Result,
    ResultBatch,
    Role,
    StatsReply,
    StatsRequest,
    WatchOutput,
)

from .cpufeatures import offer_aes_gcm
from .cpus import detect_ncpus
from .intake import BodyTable, ServedTask, take_jobs
from .loop import Loop
from .pool import WorkerPool
from .secret import resolve_secret, resolve_workers_secret
from .stealing import CANCELLED_TYPE
from .stream import Stream
from .tasks import Task
from .version import __version__

__all__ = ["WORKER_REFUSED", "DialIn", "main"]

log = logging.getLogger("ppft.dialin")

WORKER_REFUSED = "dial-in worker refused"
"""How a ppserver's Bye reason starts when it does not admit this worker (it admits no workers, or the
worker broke the rules of its role)."""


class DialIn:
    """One outbound connection to a ppserver, serving its jobs with `workers` local worker processes."""

    def __init__(self, host: str, port: int, secret: bytes, workers: int) -> None:
        self.host = host
        self.port = port
        self.workers = workers
        self.exit_code = 0
        self.connected = False  # the ppserver accepted us at least once (it sent its NodeInfo)
        self.stopped = False  # left on purpose (signal): do not reconnect
        self.loop = Loop()
        self.queue: deque[Task] = deque()
        self.pool = WorkerPool(self.loop, workers, on_results=self._results, on_requeue=self._requeue)
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
            log.error("cannot connect to ppserver %s:%d: %s", self.host, self.port, exc.strerror or exc)
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
            stream.send(NodeInfo("worker", self.workers, __version__, f"{socket.gethostname()}"))
        elif isinstance(event, NodeInfo):
            if not self.connected:
                log.info("serving ppserver %s:%d with %d worker(s)", self.host, self.port, self.workers)
            self.connected = True
        elif isinstance(event, FunctionBody):
            self._bodies.add(event, stream.conn.version)  # a refused body fails its jobs, naming why
        elif isinstance(event, JobBatch):
            tasks, unknown = take_jobs(self._bodies, event, self._ids, stream)
            self.queue.extend(tasks)
            if unknown:
                stream.send(ResultBatch(tuple(unknown)))
        elif isinstance(event, StatsRequest):
            stream.send(StatsReply(self.pool.jobs_done, self.pool.job_time, self.workers, 1))
        elif isinstance(event, Cancel):
            self._cancel(event.job_ids)
        elif isinstance(event, WatchOutput):
            self._watch_output(event.on)

    def _cancel(self, job_ids: tuple[int, ...]) -> None:
        """Jobs the ppserver gave up: those still queued here are dropped; with version 2 those in flight
        are stopped too (their worker killed and replaced, or told to skip them). Each is answered as
        cancelled."""
        wanted = set(job_ids)

        def unwanted(task: Task) -> bool:
            return cast("ServedTask", task).client_id in wanted

        gone = [task for task in self.queue if unwanted(task)]
        if gone:
            kept = [task for task in self.queue if not unwanted(task)]
            self.queue.clear()
            self.queue.extend(kept)
        if self._version >= 2:
            gone += self.pool.abandon(unwanted)
        stream = self._stream
        if gone and stream is not None:
            message = "cancelled: the ppserver gave the job up (its client left)"
            ids = [cast("ServedTask", task).client_id for task in gone]
            stream.send(ResultBatch(tuple(
                Result(job_id, False, error_type=CANCELLED_TYPE, error_message=message) for job_id in ids
            )))  # fmt: skip

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
            stream.send(ResultBatch(tuple(results)))

    def _requeue(self, tasks: list[Task]) -> None:
        self.queue.extendleft(reversed(tasks))

    def _closed(self, reason: str) -> None:
        if WORKER_REFUSED in reason:
            log.error("ppserver %s:%d refused this dial-in worker: %s", self.host, self.port, reason)
            self.exit_code = 1
        elif "closed the connection" in reason:
            log.info("ppserver %s:%d: %s", self.host, self.port, reason)
        else:
            log.error("ppserver %s:%d: %s", self.host, self.port, reason)
            self.exit_code = 1
        self.loop.stop()


def _parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="ppft-worker",
        description="Dial in to a ppserver and add this machine's worker processes to it.",
    )
    parser.add_argument("--connect", required=True, metavar="HOST:PORT", help="the ppserver to serve")
    parser.add_argument("-w", "--workers", type=int, default=None, help="worker processes (default: CPUs)")
    parser.add_argument("-s", "--secret", default=None, help="the cluster's secret (default: see docs)")
    parser.add_argument("--secret-file", default=None, help="read the secret from this file")
    parser.add_argument("-d", "--debug", action="store_true", help="log debug messages")
    parser.add_argument("--once", action="store_true", help="exit when the ppserver goes away; no retry")
    return parser.parse_args(argv)


def main(argv: list[str]) -> int:
    """`python -m ppft_worker --connect HOST:PORT ...`; returns the exit code."""
    args = _parse(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.debug else logging.INFO,
        format="%(asctime)s ppft-worker[%(process)d] %(levelname)s %(message)s",
    )
    host, sep, port_text = args.connect.rpartition(":")
    if not sep or not port_text.isdigit():
        sys.stderr.write(f"ppft-worker: --connect wants HOST:PORT, got {args.connect!r}\n")
        return 2
    workers = args.workers
    if workers is None:
        workers = detect_ncpus()
    if workers < 1:
        sys.stderr.write("ppft-worker: --workers must be at least 1\n")
        return 2
    try:
        secret = resolve_workers_secret(args.secret, secret_file=args.secret_file) or resolve_secret()
    except PPFTError as exc:
        sys.stderr.write(f"ppft-worker: {exc}\n")
        return 2
    stopping = threading.Event()
    current: list[DialIn] = []

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stopping.set()
        if current:
            current[-1].stop(f"dial-in worker stopped by {signal.Signals(signum).name}")

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    backoff = 1.0
    while True:
        dialin = DialIn(host.strip("[]"), int(port_text), secret, workers)
        current.append(dialin)
        code = dialin.run()
        current.pop()
        if dialin.stopped or stopping.is_set() or args.once:
            return code
        backoff = 1.0 if dialin.connected else min(30.0, backoff * 2)
        log.warning("trying ppserver %s again in %.0f s", args.connect, backoff)
        if stopping.wait(backoff):
            return 0
