#!/usr/bin/env python3
"""The bare batched pure-Python pipeline: how many tiny jobs per second this machine allows.

DESIGN.md section 2 and issue 8 measure ppft against this yardstick. A client thread creates one
`concurrent.futures.Future` per job and queues its pickled args; one I/O thread sends up to 256 jobs per frame
(a pickled list of `(id, args_bytes)`) over OS pipes to 2 worker processes, with two frames in flight per
worker; the workers answer with their results batched the same way and the I/O thread completes the futures.
With `tcp=True` the same frames cross one TCP loopback connection to a relay process that feeds its own 2
workers (the relay forwards frames without unpickling them).

It has no features and no safety on purpose (a dead worker hangs it, a huge frame can deadlock it): it must
never be used to run real work, and nothing in packages/ may import it. Run it as a script for a report, or
import it and call `run(n_jobs, tcp=False)`.
"""

from __future__ import annotations

import argparse
import os
import pickle
import selectors
import socket
import struct
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

try:
    from ppft_protocol import PPFTError as _ErrorBase
except ImportError:  # a bare interpreter: the yardstick itself needs nothing of the project
    _ErrorBase = Exception  # type: ignore[misc,assignment]

__all__ = ["BATCH", "FRAMES_IN_FLIGHT", "WORKERS", "BarePipelineError", "main", "run"]

BATCH = 256
FRAMES_IN_FLIGHT = 2
WORKERS = 2

_HEADER = struct.Struct("!I")
_READ_SIZE = 1 << 20
_PROTO = pickle.HIGHEST_PROTOCOL
_START_TIMEOUT = 30.0
_RESULT_TIMEOUT = 120.0


class BarePipelineError(_ErrorBase):
    """The yardstick could not run or computed a wrong value; its figure would be meaningless."""


def _job(x: int) -> int:
    return x + 1


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _split_frames(buf: bytearray) -> list[bytes]:
    """Cut every complete frame off the front of `buf` (in place) and return their payloads."""
    frames = []
    start = 0
    end = len(buf)
    while end - start >= 4:
        (size,) = _HEADER.unpack_from(buf, start)
        if end - start - 4 < size:
            break
        frames.append(bytes(buf[start + 4 : start + 4 + size]))
        start += 4 + size
    if start:
        del buf[:start]
    return frames


def _frame(payload: bytes) -> bytes:
    return _HEADER.pack(len(payload)) + payload


# --------------------------------------------------------------------------------------------- worker side


def _worker_main() -> None:
    """Worker loop: read job frames on stdin, answer each with one result frame on stdout, exit on EOF."""
    loads = pickle.loads
    dumps = pickle.dumps
    job = _job
    buf = bytearray()
    while True:
        chunk = os.read(0, _READ_SIZE)
        if not chunk:
            return
        buf += chunk
        out = []
        for payload in _split_frames(buf):
            results = [(jid, dumps(job(*loads(args)), _PROTO)) for jid, args in loads(payload)]
            out.append(_frame(dumps(results, _PROTO)))
        if out:
            _write_all(1, b"".join(out))


def _spawn(entry: str) -> subprocess.Popen[bytes]:
    here = os.path.dirname(os.path.abspath(__file__))
    code = f"import sys; sys.path.insert(0, {here!r}); import bare_pipeline; bare_pipeline.{entry}()"
    return subprocess.Popen(
        [sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, bufsize=0
    )


def _relay_main() -> None:
    """Relay: accept one TCP connection, forward its job frames to 2 workers and their result frames back.

    Frames are forwarded as bytes (never unpickled); each goes to the worker with the fewest frames in flight.
    The listening port is written as one line on stdout before accepting.
    """
    workers = [_spawn("_worker_main") for _ in range(WORKERS)]
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    _write_all(1, f"{listener.getsockname()[1]}\n".encode())
    conn, _ = listener.accept()
    listener.close()
    conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    in_flight = [0] * WORKERS
    sel = selectors.DefaultSelector()
    sel.register(conn, selectors.EVENT_READ, -1)
    for index, proc in enumerate(workers):
        assert proc.stdout is not None
        sel.register(proc.stdout.fileno(), selectors.EVENT_READ, index)
    from_client = bytearray()
    from_worker = [bytearray() for _ in workers]
    try:
        while True:
            for key, _ in sel.select():
                index = key.data
                if index == -1:
                    chunk = conn.recv(_READ_SIZE)
                    if not chunk:
                        return
                    from_client += chunk
                    for payload in _split_frames(from_client):
                        target = min(range(WORKERS), key=in_flight.__getitem__)
                        in_flight[target] += 1
                        stdin = workers[target].stdin
                        assert stdin is not None
                        _write_all(stdin.fileno(), _frame(payload))
                else:
                    chunk = os.read(key.fd, _READ_SIZE)
                    if not chunk:
                        raise BarePipelineError(
                            f"relay worker {index} exited; the bare pipeline cannot recover"
                        )
                    from_worker[index] += chunk
                    frames = _split_frames(from_worker[index])
                    if frames:
                        in_flight[index] -= len(frames)
                        conn.sendall(b"".join(_frame(payload) for payload in frames))
    finally:
        for proc in workers:
            if proc.stdin is not None:
                proc.stdin.close()
        for proc in workers:
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


# --------------------------------------------------------------------------------------------- client side


class _Peer:
    """One destination of job frames: a worker's pipes, or the relay's socket (window = all its workers)."""

    def __init__(self, send: Callable[[bytes], None], read_fd: int, recv: Callable[[], bytes], window: int):
        self.send = send
        self.read_fd = read_fd
        self.recv = recv
        self.window = window
        self.in_flight = 0
        self.buf = bytearray()


class _Pipeline:
    def __init__(self, tcp: bool) -> None:
        self._queue: deque[tuple[Future[Any], bytes]] = deque()
        self._pending: dict[int, Future[Any]] = {}
        self._next_id = 0
        self._sleeping = False
        self._closing = False
        self._wake_r, self._wake_w = os.pipe()
        self._ready = threading.Event()
        self._failure: BaseException | None = None
        self._procs: list[subprocess.Popen[bytes]] = []
        self._sock: socket.socket | None = None
        self._peers: list[_Peer] = []
        try:
            if tcp:
                self._connect_relay()
            else:
                self._start_workers()
        except BaseException:
            self._stop_processes()
            raise
        self._thread = threading.Thread(target=self._io_loop, name="bare-pipeline-io", daemon=True)
        self._thread.start()

    def _start_workers(self) -> None:
        self._procs = [_spawn("_worker_main") for _ in range(WORKERS)]
        for proc in self._procs:
            assert proc.stdin is not None and proc.stdout is not None
            write_fd, read_fd = proc.stdin.fileno(), proc.stdout.fileno()
            self._peers.append(
                _Peer(
                    lambda data, fd=write_fd: _write_all(fd, data),  # type: ignore[misc]
                    read_fd,
                    lambda fd=read_fd: os.read(fd, _READ_SIZE),  # type: ignore[misc]
                    FRAMES_IN_FLIGHT,
                )
            )

    def _connect_relay(self) -> None:
        relay = _spawn("_relay_main")
        self._procs = [relay]
        assert relay.stdout is not None
        line = relay.stdout.readline()
        if not line.strip().isdigit():
            raise BarePipelineError(f"the relay did not print its port (got {line!r}); see its stderr above")
        sock = socket.create_connection(("127.0.0.1", int(line)), timeout=_START_TIMEOUT)
        sock.settimeout(None)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._sock = sock
        self._peers.append(
            _Peer(sock.sendall, sock.fileno(), lambda: sock.recv(_READ_SIZE), WORKERS * FRAMES_IN_FLIGHT)
        )

    def submit(self, x: int) -> Future[Any]:
        """Queue one job; wake the I/O thread only when it sleeps with room in a window (not per job)."""
        fut: Future[Any] = Future()
        self._queue.append((fut, pickle.dumps((x,), _PROTO)))
        if self._sleeping:
            self._sleeping = False
            os.write(self._wake_w, b"\0")
        return fut

    def _fill(self) -> None:
        queue = self._queue
        pending = self._pending
        for peer in self._peers:
            while peer.in_flight < peer.window and queue:
                batch = []
                jid = self._next_id
                for _ in range(min(BATCH, len(queue))):
                    fut, args = queue.popleft()
                    pending[jid] = fut
                    batch.append((jid, args))
                    jid += 1
                self._next_id = jid
                peer.in_flight += 1
                peer.send(_frame(pickle.dumps(batch, _PROTO)))

    def _io_loop(self) -> None:
        sel = selectors.DefaultSelector()
        sel.register(self._wake_r, selectors.EVENT_READ, None)
        for peer in self._peers:
            sel.register(peer.read_fd, selectors.EVENT_READ, peer)
        loads = pickle.loads
        pending = self._pending
        try:
            # One empty frame per worker: its answer says the worker is up (startup is not measured here).
            pings = len(self._procs) if self._sock is None else WORKERS
            for index in range(pings):
                peer = self._peers[index % len(self._peers)]
                peer.in_flight += 1
                peer.send(_frame(pickle.dumps([], _PROTO)))
            while not self._closing:
                if any(peer.in_flight < peer.window for peer in self._peers):
                    self._sleeping = True  # set before looking at the queue, so no wake-up is lost
                    if self._queue:
                        self._sleeping = False
                        self._fill()
                        continue
                for key, _ in sel.select():
                    peer = key.data
                    if peer is None:
                        os.read(self._wake_r, 4096)
                        continue
                    chunk = peer.recv()
                    if not chunk:
                        raise BarePipelineError(
                            "a worker or the relay closed its channel; no result can come"
                        )
                    peer.buf += chunk
                    for payload in _split_frames(peer.buf):
                        peer.in_flight -= 1
                        for jid, result in loads(payload):
                            pending.pop(jid).set_result(loads(result))
                if not self._ready.is_set() and not any(peer.in_flight for peer in self._peers):
                    self._ready.set()
                self._sleeping = False
                self._fill()
        except BaseException as exc:
            # Fail every waiting future at once (no waiter may hang), then let the error show.
            self._failure = exc
            for fut in pending.values():
                fut.set_exception(BarePipelineError(f"the bare pipeline's I/O thread failed: {exc!r}"))
            self._ready.set()
            raise
        finally:
            sel.close()

    def wait_ready(self) -> None:
        if not self._ready.wait(_START_TIMEOUT) or self._failure is not None:
            raise BarePipelineError(
                f"the workers did not answer within {_START_TIMEOUT:.0f} s ({self._failure!r}); "
                "see their stderr above"
            )

    def close(self) -> None:
        self._closing = True
        os.write(self._wake_w, b"\0")
        self._thread.join(timeout=5)
        self._stop_processes()
        os.close(self._wake_r)
        os.close(self._wake_w)

    def _stop_processes(self) -> None:
        if self._sock is not None:
            self._sock.close()
        for proc in self._procs:
            if proc.stdin is not None:
                proc.stdin.close()
        for proc in self._procs:
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            if proc.stdout is not None:
                proc.stdout.close()


def run(n_jobs: int, tcp: bool = False) -> float:
    """Start the pipeline, time `n_jobs` tiny jobs submitted one by one then all collected, return jobs/s.

    Worker startup is outside the timed span (the pipeline waits until every worker answered a ping).
    Every result is checked; a wrong one raises `BarePipelineError` rather than report a figure.
    """
    pipe = _Pipeline(tcp)
    try:
        pipe.wait_ready()
        submit = pipe.submit
        start = time.perf_counter()
        futures = [submit(i) for i in range(n_jobs)]
        results = [fut.result(_RESULT_TIMEOUT) for fut in futures]
        elapsed = time.perf_counter() - start
    finally:
        pipe.close()
    wrong = next((i for i, value in enumerate(results) if value != i + 1), None)
    if wrong is not None:
        raise BarePipelineError(
            f"job {wrong} returned {results[wrong]!r}, expected {wrong + 1}: the pipeline is broken"
        )
    return n_jobs / elapsed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--tcp", action="store_true", help="go through one TCP loopback connection to a relay"
    )
    parser.add_argument(
        "-n", "--jobs", type=int, action="append", help="job count (repeatable; default 20000 and 100000)"
    )
    args = parser.parse_args(argv)
    mode = "tcp relay" if args.tcp else "pipes"
    for n_jobs in args.jobs or [20_000, 100_000]:
        rate = run(n_jobs, tcp=args.tcp)
        print(f"bare pipeline ({mode}, {WORKERS} workers, batch {BATCH}): {n_jobs} jobs: {rate:,.0f} jobs/s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
