"""Direct worker links, the ppserver's side: a hand-written client (`ppft_protocol.Connection` over a real
socket) against a real ppserver process.

A client's new connection sends `Attach` as its first message; the ppserver answers `Attached(direct_id)`
and hands the socket to a worker process of its own, which runs a new handshake with the client and then
serves it as a worker; or it refuses with a `Bye` that says why. `EndDirect` on the client's ordinary
session kills direct workers; a client that leaves, or a ppserver that stops, leaves none behind.
"""

from __future__ import annotations

import os
import pickle
import re
import signal
import socket
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from clusterlib import SECRET, Cluster, Proc, pid_alive, wait_until
from ppft_protocol import (
    Attach,
    Attached,
    AuthenticationError,
    Bye,
    Closed,
    Connection,
    EndDirect,
    Event,
    Job,
    JobBatch,
    NodeInfo,
    Result,
    ResultBatch,
    Role,
    StatsReply,
    StatsRequest,
)
from statuslib import metrics, ppserver_with_page, status

DEBUG = ("-d",)  # the ppserver logs each direct worker's pid at INFO


def add_one(x):
    return x + 1


def nap(marker, seconds):
    import time

    open(marker, "w").close()  # the job has started: the test waits for this file
    time.sleep(seconds)
    return seconds


def spoil_the_report_pipe(junk):
    """Write `junk` on this direct worker's report pipe (its only write-only pipe), as a job could."""
    import fcntl
    import os

    for name in os.listdir("/proc/self/fd"):
        fd = int(name)
        try:
            pipe = os.readlink(f"/proc/self/fd/{fd}").startswith("pipe:")
            write_only = fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_ACCMODE == os.O_WRONLY
        except OSError:
            continue
        if pipe and write_only:
            return os.write(fd, junk)
    return -1


def _body(func):  # type: ignore[no-untyped-def]
    from ppft_client.shipping.functions import function_body

    return function_body(func)


class Peer:
    """One connection to the ppserver, spoken by hand over a blocking socket."""

    def __init__(self, port: int, secret: str = SECRET) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=20)
        self.conn = Connection(Role.CLIENT, secret)
        self.sock.sendall(self.conn.data_to_send())
        self.pump(lambda e: isinstance(e, NodeInfo))

    def send(self, *messages: object) -> None:
        for message in messages:
            self.conn.send(message)  # type: ignore[arg-type]
        self.sock.sendall(self.conn.data_to_send())

    def pump(self, done: Callable[[Event], bool], timeout: float = 20.0) -> list[Event]:
        """Events until one `done` holds for, or the connection ended (Closed last); fails after `timeout`."""
        seen: list[Event] = []
        deadline = time.monotonic() + timeout
        while True:
            self.sock.settimeout(max(0.01, deadline - time.monotonic()))
            try:
                data = self.sock.recv(1 << 20)
            except TimeoutError:
                pytest.fail(f"nothing the test waits for within {timeout} s; seen: {seen}")
            except ConnectionResetError:
                data = b""
            events = self.conn.receive_data(data)
            out = self.conn.data_to_send()
            if out:
                self.sock.sendall(out)
            seen.extend(events)
            if not data or any(done(e) or isinstance(e, Closed) for e in events):
                return seen

    def attach(self) -> Attached | Bye:
        """Send Attach; the answer: Attached (this peer then speaks to the direct worker) or the Bye."""
        self.send(Attach())
        events = self.pump(lambda e: isinstance(e, (Attached, Bye)))
        answer = next((e for e in events if isinstance(e, (Attached, Bye))), None)
        assert answer is not None, events
        return answer

    def greet_worker(self, secret: str = SECRET) -> NodeInfo:
        """After Attached: the new handshake, the client speaking first; the direct worker's NodeInfo."""
        self.conn = Connection(Role.CLIENT, secret)
        self.sock.sendall(self.conn.data_to_send())
        events = self.pump(lambda e: isinstance(e, NodeInfo))
        info = next((e for e in events if isinstance(e, NodeInfo)), None)
        assert info is not None, events
        return info

    def eof(self, timeout: float) -> bool:
        """Whether the other end closes the connection within `timeout` (what it sends first is dropped)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.sock.settimeout(max(0.01, deadline - time.monotonic()))
            try:
                if not self.sock.recv(1 << 20):
                    return True
            except TimeoutError:
                return False
            except ConnectionResetError:
                return True
        return False

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def peers() -> Iterator[Callable[..., Peer]]:
    made: list[Peer] = []

    def make(port: int, secret: str = SECRET) -> Peer:
        peer = Peer(port, secret)
        made.append(peer)
        return peer

    yield make
    for peer in made:
        peer.close()


def _direct_pid(cluster: Cluster, node: Proc, peer: Peer, pids: list[int]) -> int:
    """The pid of the direct worker serving `peer` (the ppserver logs it with -d)."""
    port = peer.sock.getsockname()[1]
    pattern = re.compile(rf"client 127\.0\.0\.1:{port}: direct worker pid (\d+) serves")
    wait_until(lambda: pattern.search(cluster.read_log(node)) is not None, 20, "the direct worker's pid")
    match = pattern.search(cluster.read_log(node))
    assert match is not None
    pid = int(match.group(1))
    pids.append(pid)
    return pid


def _run(peer: Peer, func, job_id: int, *args: object) -> None:  # type: ignore[no-untyped-def]
    body = _body(func)
    peer.send(body, JobBatch((Job(job_id, body.digest, pickle.dumps(args)),)))


def _bye(answer: Attached | Bye) -> str:
    assert isinstance(answer, Bye), answer
    return answer.reason


def test_a_direct_link_runs_a_job_on_a_worker_of_its_own(cluster, peers, stray_pids):
    node = cluster.ppserver(1, extra=DEBUG)
    peer = peers(node.port)
    answer = peer.attach()
    assert isinstance(answer, Attached), answer
    pid = _direct_pid(cluster, node, peer, stray_pids)
    info = peer.greet_worker()
    assert (info.kind, info.workers) == ("worker", 1)
    assert info.name.endswith(f":{pid}")  # the direct worker itself answers, not the ppserver
    _run(peer, add_one, 7, 41)
    events = peer.pump(lambda e: isinstance(e, ResultBatch))
    (result,) = next(e for e in events if isinstance(e, ResultBatch)).results
    assert result.job_id == 7 and result.ok and pickle.loads(result.value) == 42
    peer.close()
    wait_until(lambda: not pid_alive(pid), 10, "the direct worker to exit on EOF")
    assert "direct worker pid" in cluster.read_log(node)
    assert "WARNING" not in cluster.read_log(node)


def test_direct_links_are_refused_when_turned_off(cluster, peers):
    node = cluster.ppserver(1, extra=("--direct-workers", "0"))
    peer = peers(node.port)
    reason = _bye(peer.attach())
    assert reason.startswith("direct link refused: ") and "--direct-workers 0" in reason, reason
    assert peer.eof(10)


def test_direct_links_are_refused_when_all_are_in_use(cluster, peers, stray_pids):
    node = cluster.ppserver(1, extra=(*DEBUG, "--direct-workers", "1"))
    first = peers(node.port)
    assert isinstance(first.attach(), Attached)
    _direct_pid(cluster, node, first, stray_pids)
    reason = _bye(peers(node.port).attach())
    assert reason == "direct link refused: all 1 direct workers are in use: jobs go through the ppserver"
    first.greet_worker()  # the one in use is not disturbed
    _run(first, add_one, 1, 1)
    assert any(isinstance(e, ResultBatch) for e in first.pump(lambda e: isinstance(e, ResultBatch)))


def test_direct_links_are_refused_when_the_pool_enforces_limits(cluster, peers):
    node = cluster.ppserver(1, extra=("--max-jobs-per-worker", "10"))
    reason = _bye(peers(node.port).attach())
    assert reason.startswith("direct link refused: ") and "--max-jobs-per-worker" in reason, reason


def test_attach_after_another_message_closes_that_session(cluster, peers):
    node = cluster.ppserver(1)
    peer = peers(node.port)
    peer.send(StatsRequest())
    assert any(isinstance(e, StatsReply) for e in peer.pump(lambda e: isinstance(e, StatsReply)))
    reason = _bye(peer.attach())
    assert "Attach came after other messages" in reason, reason
    assert "Attach came after other messages" in cluster.read_log(node)
    other = peers(node.port)  # the ppserver goes on serving
    other.send(StatsRequest())
    assert any(isinstance(e, StatsReply) for e in other.pump(lambda e: isinstance(e, StatsReply)))


def test_attach_from_a_dial_in_worker_closes_its_session(cluster):
    node = cluster.ppserver(1, extra=("--workers-secret", "workers secret"))
    sock = socket.create_connection(("127.0.0.1", node.port), timeout=20)
    try:
        worker = Peer.__new__(Peer)  # a dial-in worker's handshake, then the same helpers
        worker.sock, worker.conn = sock, Connection(Role.CLIENT, "workers secret", worker=True)
        sock.sendall(worker.conn.data_to_send())
        worker.pump(lambda e: isinstance(e, NodeInfo))
        reason = _bye(worker.attach())
    finally:
        sock.close()
    assert "a dial-in worker sent Attach: direct links are for clients" in reason, reason


def test_a_message_sent_after_attach_before_its_answer_closes_that_session(cluster, peers):
    node = cluster.ppserver(1)
    peer = peers(node.port)
    peer.send(Attach(), StatsRequest())  # in one write: the ppserver reads both at once
    events = peer.pump(lambda e: isinstance(e, (Attached, Bye)))
    reason = next(e.reason for e in events if isinstance(e, Bye))
    assert "sent StatsRequest after Attach" in reason, reason
    assert not any(isinstance(e, Attached) for e in events)


def test_a_wrong_secret_on_the_direct_handshake_is_refused_and_ends_that_worker(cluster, peers, stray_pids):
    node = cluster.ppserver(1, extra=DEBUG)
    peer = peers(node.port)
    assert isinstance(peer.attach(), Attached)
    pid = _direct_pid(cluster, node, peer, stray_pids)
    with pytest.raises(AuthenticationError, match="secrets differ"):
        peer.greet_worker(secret="not the secret")
    wait_until(lambda: not pid_alive(pid), 10, "the direct worker to exit")
    reaped = f"direct worker pid {pid} of 127.0.0.1:{peer.sock.getsockname()[1]} exited with code 2"
    wait_until(lambda: reaped in cluster.read_log(node), 10, "the ppserver to reap it, with a warning")
    again = peers(node.port)  # the ppserver keeps serving, direct links included
    assert isinstance(again.attach(), Attached)
    _direct_pid(cluster, node, again, stray_pids)
    again.greet_worker()


def test_end_direct_kills_a_worker_running_a_long_job(cluster, peers, stray_pids, tmp_path):
    node = cluster.ppserver(1, extra=DEBUG)
    control = peers(node.port)
    peer = peers(node.port)
    answer = peer.attach()
    assert isinstance(answer, Attached)
    pid = _direct_pid(cluster, node, peer, stray_pids)
    peer.greet_worker()
    marker = tmp_path / "started"
    _run(peer, nap, 1, str(marker), 60)
    wait_until(marker.exists, 20, "the long job to start")
    control.send(EndDirect((answer.direct_id, 12345)))  # an unknown id is ignored
    assert peer.eof(10), "the client's socket did not see EOF after EndDirect"
    wait_until(lambda: not pid_alive(pid), 10, "the direct worker to be killed")
    control.send(StatsRequest())  # the control session goes on
    assert any(isinstance(e, StatsReply) for e in control.pump(lambda e: isinstance(e, StatsReply)))


def test_a_client_that_leaves_has_its_running_direct_job_stopped(cluster, peers, stray_pids, tmp_path):
    node = cluster.ppserver(1, extra=DEBUG)
    peer = peers(node.port)
    assert isinstance(peer.attach(), Attached)
    pid = _direct_pid(cluster, node, peer, stray_pids)
    peer.greet_worker()
    marker = tmp_path / "started"
    _run(peer, nap, 1, str(marker), 60)
    wait_until(marker.exists, 20, "the long job to start")
    peer.close()
    wait_until(lambda: not pid_alive(pid), 8, "the direct worker of a client that left to be killed")
    assert "its client closed the connection" in cluster.read_log(node)


def test_a_stopped_ppserver_leaves_no_direct_worker(cluster, peers, stray_pids, tmp_path):
    node = cluster.ppserver(1, extra=DEBUG)
    peer = peers(node.port)
    assert isinstance(peer.attach(), Attached)
    pid = _direct_pid(cluster, node, peer, stray_pids)
    peer.greet_worker()
    marker = tmp_path / "started"
    _run(peer, nap, 1, str(marker), 60)
    wait_until(marker.exists, 20, "the long job to start")
    os.kill(node.pid, signal.SIGTERM)
    assert node.popen.wait(20) == 0, cluster.read_log(node)
    assert not pid_alive(pid)
    assert "stopping direct worker pid" in cluster.read_log(node)


def test_the_status_page_shows_direct_workers(cluster, peers, stray_pids):
    node, url = ppserver_with_page(cluster, 1, extra=DEBUG)
    assert status(url)["direct"]["running"] == 0
    peer = peers(node.port)
    assert isinstance(peer.attach(), Attached)
    pid = _direct_pid(cluster, node, peer, stray_pids)
    wait_until(lambda: status(url)["direct"]["running"] == 1, 10, "the page to count it")  # a cached snapshot
    direct = status(url)["direct"]
    assert direct["limit"] == 1 and direct["running"] == 1 and direct["by_client"] == {"127.0.0.1": 1}
    (row,) = direct["workers"]
    assert row["pid"] == pid and row["address"] == f"127.0.0.1:{peer.sock.getsockname()[1]}"


def _run_many(peer: Peer, func, args: list[tuple[object, ...]]) -> list[Result]:  # type: ignore[no-untyped-def]
    """Run one job per `args` on `peer`'s direct worker (one batch); their results, in order."""
    body = _body(func)
    peer.send(body, JobBatch(tuple(Job(i, body.digest, pickle.dumps(a)) for i, a in enumerate(args))))
    results: list[Result] = []
    while len(results) < len(args):
        events = peer.pump(lambda e: isinstance(e, ResultBatch))
        results.extend(r for e in events if isinstance(e, ResultBatch) for r in e.results)
        assert not any(isinstance(e, Closed) for e in events), events
    return sorted(results, key=lambda r: r.job_id)


def test_the_ppserver_counts_the_jobs_of_its_direct_workers(cluster, peers, stray_pids):
    node, url = ppserver_with_page(cluster, 1, extra=DEBUG)
    peer = peers(node.port)
    assert isinstance(peer.attach(), Attached)
    _direct_pid(cluster, node, peer, stray_pids)
    peer.greet_worker()
    args: list[tuple[object, ...]] = [(i,) for i in range(197)] + [("not a number",)] * 3  # 3 raise
    results = _run_many(peer, add_one, args)
    assert [r.ok for r in results] == [True] * 197 + [False] * 3
    # The client stays connected and sends nothing more: the worker reports while it waits. The 3 failures
    # come last: a report may count all the jobs done before them, and some of them. The page's snapshot may
    # be taken while a report is counted (outcomes, then durations, then the worker's row): wait for one
    # page that shows them all.
    pages: list[dict[str, Any]] = []

    def counted() -> bool:
        page = status(url)
        pages.append(page)
        rows = [(row["jobs_done"], row["errors"]) for row in page["direct"]["workers"]]
        jobs = (page["jobs"]["ok"], page["jobs"]["error"], page["durations"]["count"])
        return jobs == (197, 3, 200) and rows == [(200, 3)]

    wait_until(counted, 5, "the ppserver to count 200 jobs")
    assert pages[-1]["durations"]["sum"] > 0
    wait_until(lambda: sum(status(url)["rate"]["last"]) == 200, 5, "the rate chart to show them")
    figures = metrics(url)
    assert figures[("ppft_jobs_total", (("outcome", "ok"),))] == 197
    assert figures[("ppft_jobs_total", (("outcome", "error"),))] == 3
    assert "WARNING" not in cluster.read_log(node)


def test_a_direct_worker_whose_report_pipe_is_spoilt_serves_on_and_is_counted_no_more(
    cluster, peers, stray_pids
):
    node, url = ppserver_with_page(cluster, 1, extra=DEBUG)
    peer = peers(node.port)
    assert isinstance(peer.attach(), Attached)
    pid = _direct_pid(cluster, node, peer, stray_pids)
    peer.greet_worker()
    assert [r.ok for r in _run_many(peer, add_one, [(1,), (2,)])] == [True, True]
    wait_until(lambda: status(url)["jobs"]["ok"] == 2, 5, "the two jobs to be counted")
    (written,) = _run_many(peer, spoil_the_report_pipe, [(b"not a report",)])
    assert written.ok and pickle.loads(written.value) == len(b"not a report")
    warning = f"direct worker pid {pid} of 127.0.0.1:{peer.sock.getsockname()[1]}: its report pipe is closed"
    wait_until(lambda: warning in cluster.read_log(node), 5, "the ppserver to give up that pipe")
    assert "not a report (12 bytes, not a whole number of 24-byte records)" in cluster.read_log(node)
    results = _run_many(peer, add_one, [(i,) for i in range(50)])  # the worker serves on
    assert [pickle.loads(r.value) for r in results] == list(range(1, 51))
    assert pid_alive(pid)
    page = status(url)
    assert page["jobs"]["ok"] == 2 and page["direct"]["running"] == 1  # nothing counted from the junk on
    other = peers(node.port)  # and the ppserver serves on
    other.send(StatsRequest())
    assert any(isinstance(e, StatsReply) for e in other.pump(lambda e: isinstance(e, StatsReply)))
