"""Bounded memory under a client that sends without measure or does not read: backpressure, never loss.

A client over its cap of queued jobs is no longer read (its jobs wait in the network buffers, its sends
block) until half of them ran; a client that leaves its results unread has its jobs wait their turn too. Every
job still runs and is answered exactly once. Function bodies, which a connection keeps until it closes, are
capped, with an error that closes that session.
"""

from __future__ import annotations

import pickle
import select
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from ppft_protocol import FunctionBody, Job, JobBatch, ProtocolError, ResultBatch


def rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


class Pusher:
    """Sends frames of jobs on a non-blocking socket as fast as the ppserver takes them, reading results."""

    def __init__(self, peer: Any) -> None:
        self.peer = peer
        self.sock = peer.sock
        self.sock.setblocking(False)
        self.pending = b""
        self.results: dict[int, Any] = {}

    def queue(self, *messages: Any) -> None:
        for message in messages:
            self.peer.conn.send(message)
        self.pending += self.peer.conn.data_to_send()

    def write(self, wait: float) -> bool:
        """Write what the socket takes within `wait` seconds; whether it took anything."""
        _, writable, _ = select.select([], [self.sock], [], wait)
        if not writable or not self.pending:
            return False
        try:
            n = self.sock.send(self.pending)
        except BlockingIOError:
            return False
        self.pending = self.pending[n:]
        return n > 0

    def read(self, wait: float) -> None:
        readable, _, _ = select.select([self.sock], [], [], wait)
        if readable:
            data = self.sock.recv(1 << 22)
            assert data, "the ppserver closed the connection"
            try:
                events = self.peer.conn.receive_data(data)
            except ProtocolError as exc:
                raise AssertionError(f"the ppserver broke the connection: {exc}") from None
            for event in events:
                if isinstance(event, ResultBatch):
                    for result in event.results:
                        assert result.job_id not in self.results, f"job {result.job_id} answered twice"
                        self.results[result.job_id] = result
            self.pending += self.peer.conn.data_to_send()


def test_a_client_over_its_queue_cap_is_not_read_until_its_jobs_ran(
    start_ppserver: Callable[..., Any], free_port: int, connect: Callable[..., Any],
    bodies: dict[str, FunctionBody], tmp_path: Path,
) -> None:  # fmt: skip
    server = start_ppserver("-i", "127.0.0.1", "-p", str(free_port), "-w", "1", "--max-queued-jobs", "100")
    server.wait_started()
    gate, echo, door = bodies["gate"], bodies["echo"], tmp_path / "open"
    pusher = Pusher(connect(free_port).established())
    pusher.queue(gate, echo, JobBatch((Job(0, gate.digest, pickle.dumps((str(door),)), 5),)))
    payload = b"p" * 10_000
    total = 20_000
    frames = [
        JobBatch(tuple(Job(i, echo.digest, pickle.dumps((payload,)), 5) for i in range(k, k + 50)))
        for k in range(1, total + 1, 50)
    ]
    sent = 0
    while frames and (pusher.write(2.0) or not pusher.pending):  # 2 s without room: the ppserver stopped
        if not pusher.pending:
            pusher.queue(frames.pop(0))
            sent += 50
    assert frames, "the ppserver read 200 MB of jobs while its worker was busy: no backpressure"
    assert sent < 3000, f"{sent} jobs went out while the cap is 100 (a few MB in the kernel's buffers)"
    assert rss_mib(server.pid) < 150
    door.touch()
    deadline = time.monotonic() + 120
    while len(pusher.results) < total + 1:
        assert time.monotonic() < deadline, f"{len(pusher.results)} of {total + 1} results"
        if not pusher.pending and frames:
            pusher.queue(frames.pop(0))
        pusher.write(0)
        pusher.read(0.05)
    assert all(r.ok for r in pusher.results.values())
    assert pickle.loads(pusher.results[total].value) == payload


def test_a_client_that_reads_no_results_has_its_jobs_held_back(
    start_ppserver: Callable[..., Any], free_port: int, connect: Callable[..., Any],
    bodies: dict[str, FunctionBody],
) -> None:  # fmt: skip
    """100 results of 4 MiB for a client that reads none: the ppserver keeps about 64 MiB of them unsent
    and runs the rest once the client reads again."""
    server = start_ppserver("-d", "-i", "127.0.0.1", "-p", str(free_port), "-w", "1")
    server.wait_started()
    big = bodies["big"]
    peer = connect(free_port).established()
    jobs = tuple(Job(i, big.digest, pickle.dumps((4 << 20, 0.005)), 5) for i in range(100))
    peer.send(big, JobBatch(jobs))
    server.wait_for_line(
        r"holding back 127\.0\.0\.1:\d+: \d+ job\(s\) queued, \d+ byte\(s\) of results unread"
    )
    peak = 0.0
    end = time.monotonic() + 1.0
    while time.monotonic() < end:  # a second of samples, to see it does not grow
        peak = max(peak, rss_mib(server.pid))
        time.sleep(0.05)
    assert peak < 200, f"ppserver holds {peak:.0f} MiB for a client that reads nothing"
    peer.wait_for(lambda p: len(p.results()) == 100, timeout=60, what="all 100 results")
    assert all(len(pickle.loads(r.value)) == 4 << 20 for r in peer.results().values())


@pytest.mark.timeout(180)
def test_a_version_1_connection_sending_too_many_function_bodies_is_closed(
    start_ppserver: Callable[..., Any], free_port: int, connect: Callable[..., Any],
    make_body: Callable[..., FunctionBody],
) -> None:  # fmt: skip
    server = start_ppserver("-i", "127.0.0.1", "-p", str(free_port), "-w", "1")
    server.wait_started()
    # version 1 keeps every body until the connection closes; version 2 forgets the oldest beyond the budget
    # both ends count (ppft_protocol.BodyLedger), so there the client sends again instead
    peer = connect(free_port, versions=(1, 1)).established()
    for start in range(0, 65537, 4096):
        peer.send(*(make_body(f"def f{i}():\n    return {i}\n", f"f{i}") for i in range(start, start + 4096)))
    reason = peer.wait_closed(60)
    assert "this connection sent 65536 functions" in reason
    assert "the limit is 65536 functions and 256 MiB per connection of protocol version 1" in reason
    (result,) = connect(free_port).established().run(make_body("def g():\n    return 1\n", "g"), ())
    assert result.ok
