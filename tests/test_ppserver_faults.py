"""A ppserver that faults of its clients and of strangers cannot stop, starve or mislead, seen by a real ppft
client: a client killed while its long job runs, a flood of connections while a client works, and a node
that answers jobs as cancelled without being asked."""

from __future__ import annotations

import os
import pickle
import resource
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

import ppft
from clusterlib import SECRET, Cluster, tied_to_this_process, wait_until
from ppft_protocol import Connection, Established, JobBatch, NodeInfo, Result, ResultBatch, Role

SCRIPTS = Path(__file__).resolve().parent / "scripts"
CANCELLED = "concurrent.futures.CancelledError"


def add_one(x):
    return x + 1


def test_a_killed_client_frees_the_worker_its_long_job_held(cluster: Cluster, make_client, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """Reproduced: the next client waited behind the whole job of a SIGKILLed one (6.5 s of an 8 s job)."""
    node = cluster.ppserver(1)
    mark = tmp_path / "started"
    user = subprocess.Popen(
        tied_to_this_process([sys.executable, str(SCRIPTS / "long_job_then_killed.py"), str(mark)]),
        env=dict(os.environ, PPFT_SECRET=SECRET, PPSERVER=node.address),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        wait_until(lambda: mark.exists() or user.poll() is not None, 60, "the long job to start")
        assert user.poll() is None, user.communicate(timeout=10)
        user.kill()
        user.wait(10)
    finally:
        if user.poll() is None:
            user.kill()
        user.communicate(timeout=10)
    client = make_client(0, ppservers=(node.address,))
    started = time.monotonic()
    assert client.submit(add_one, (1,)).result(timeout=60) == 2
    assert time.monotonic() - started < 15  # not 60 s behind the killed client's job


def flood(port: int, stop: threading.Event, count: int = 300) -> None:
    """Keep `count` idle connections open to `port`, opening another for each the server closes."""
    socks: list[socket.socket] = []
    try:
        while not stop.is_set():
            while len(socks) < count:
                sock = socket.socket()
                sock.setblocking(False)
                sock.connect_ex(("127.0.0.1", port))
                socks.append(sock)
            kept = []
            for sock in socks:
                try:
                    while sock.recv(65536):
                        pass
                    sock.close()  # closed by the server
                except (BlockingIOError, InterruptedError):
                    kept.append(sock)
                except OSError:
                    sock.close()
            socks = kept
            stop.wait(0.02)
    finally:
        for sock in socks:
            sock.close()


def test_a_real_client_works_through_a_replenished_flood(cluster: Cluster, make_client) -> None:  # type: ignore[no-untyped-def]
    """300 idle connections kept open against a ppserver allowed 256 files: it drops them (its log says so,
    a few lines), and clients connect and run their jobs all the while."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard))  # the ppserver inherits it: `ulimit -n 256`
    try:
        node = cluster.ppserver(2)
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    stop = threading.Event()
    thread = threading.Thread(target=flood, args=(node.port, stop), daemon=True)
    thread.start()
    try:
        for _ in range(3):  # each client's handshake happens in the middle of the flood
            client = make_client(0, ppservers=(node.address,))
            jobs = [client.submit(add_one, (i,)) for i in range(200)]
            assert [job.result(timeout=60) for job in jobs] == list(range(1, 201))
            client.destroy()
    finally:
        stop.set()
        thread.join(10)
    assert node.popen.poll() is None
    logged = cluster.read_log(node).splitlines()
    assert len(logged) < 20, "\n".join(logged[:40])


class GivingBack:
    """A fake ppserver that answers every job as cancelled, unasked, `times` times, then runs it (its value is
    the job's argument, which must be a number, plus one)."""

    def __init__(self, times: int) -> None:
        self.times = times
        self.seen: dict[bytes, int] = {}
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        self.listener.settimeout(0.1)
        while not self.stop.is_set():
            try:
                sock, _ = self.listener.accept()
            except TimeoutError:
                continue
            with sock:
                self._session(sock)

    def _session(self, sock: socket.socket) -> None:
        conn = Connection(Role.SERVER, SECRET)
        sock.settimeout(0.2)
        sock.sendall(conn.data_to_send())
        while not self.stop.is_set():
            try:
                data = sock.recv(1 << 20)
            except TimeoutError:
                if conn.state.value == "established":
                    from ppft_protocol import Heartbeat

                    conn.send(Heartbeat())
                    sock.sendall(conn.data_to_send())
                continue
            if not data:
                return
            for event in conn.receive_data(data):
                if isinstance(event, Established):
                    conn.send(NodeInfo("server", 1, "2", "giving-back"))
                elif isinstance(event, JobBatch):
                    results = []
                    for job in event.jobs:
                        key = bytes(job.args)
                        self.seen[key] = self.seen.get(key, 0) + 1
                        if self.seen[key] <= self.times:
                            results.append(Result(job.job_id, False, error_type=CANCELLED,
                                                  error_message="cancelled before it started"))  # fmt: skip
                        else:
                            (x,) = pickle.loads(job.args)
                            results.append(Result(job.job_id, True, pickle.dumps(x + 1)))
                    conn.send(ResultBatch(tuple(results)))
            out = conn.data_to_send()
            if out:
                sock.sendall(out)

    def close(self) -> None:
        self.stop.set()
        self.thread.join(5)
        self.listener.close()


@pytest.fixture
def giving_back() -> Iterator[Callable[[int], GivingBack]]:
    made: list[GivingBack] = []

    def make(times: int) -> GivingBack:
        server = GivingBack(times)
        made.append(server)
        return server

    yield make
    for server in made:
        server.close()


def test_a_job_a_node_cancels_unasked_runs_again(giving_back, make_client) -> None:  # type: ignore[no-untyped-def]
    """Reproduced: a cancelled result the client never asked for failed the job with RemoteJobError
    ("concurrent.futures.CancelledError: cancelled before it started")."""
    node = giving_back(1)
    client = make_client(0, ppservers=(f"127.0.0.1:{node.port}",))
    assert client.submit(add_one, (41,)).result(timeout=60) == 42


def test_a_node_that_cancels_every_job_cannot_bounce_it_forever(giving_back, make_client) -> None:  # type: ignore[no-untyped-def]
    node = giving_back(1000)
    client = make_client(0, ppservers=(f"127.0.0.1:{node.port}",))
    with pytest.raises(ppft.NodeLostError, match="the ppserver cancelled jobs it was not asked to cancel"):
        client.submit(add_one, (41,)).result(timeout=60)


def test_a_cancelled_result_is_a_cancelled_error() -> None:
    from concurrent.futures import CancelledError

    from ppft_client.rebuild import rebuild_exception

    result = Result(
        1, False, error_type="concurrent.futures.CancelledError", error_message="cancelled before it started"
    )
    exc = rebuild_exception(result)
    assert isinstance(exc, CancelledError) and str(exc) == "cancelled before it started"
