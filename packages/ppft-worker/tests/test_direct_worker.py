"""A direct worker (`ppft_worker.pool.start_direct_worker`) on a real TCP connection, without a ppserver: it
says nothing before the client's first bytes, then runs the handshake and the worker loop; what its channel
may be comes from the starter (sealed, AES-256-GCM offered, or unsealed). It reports its counts on the pipe
its starter passed (`ppft_worker.process.report`), and serves on when that pipe is full or closed."""

from __future__ import annotations

import os
import pickle
import select
import socket
import subprocess
import time
from collections.abc import Iterator

import pytest

from ppft_protocol import Connection, Job, JobBatch, NodeInfo, ResultBatch, Role
from ppft_worker.pool import start_direct_worker
from ppft_worker.process import REPORT_RECORD

SECRET = b"direct worker secret"


def triple(x):
    return 3 * x


def _serve_jobs(client: socket.socket, conn: Connection, values: list[object]) -> list[object]:
    """Run `triple` on each of `values` (one batch); the results, ok or not, by job id."""
    from ppft_client.shipping.functions import function_body

    body = function_body(triple)
    conn.send(body)
    conn.send(JobBatch(tuple(Job(i, body.digest, pickle.dumps((v,))) for i, v in enumerate(values))))
    client.sendall(conn.data_to_send())
    results = {}
    while len(results) < len(values):
        data = client.recv(65536)
        assert data, "the direct worker closed the connection"
        for event in conn.receive_data(data):
            if isinstance(event, ResultBatch):
                results.update((r.job_id, pickle.loads(r.value) if r.ok else None) for r in event.results)
    return [results[i] for i in range(len(values))]


def _records(fd: int, until: tuple[int, int], timeout: float = 10.0) -> list[tuple[int, int, float]]:
    """The reports read from `fd` until one says `until` (jobs done, failed); fails after `timeout`."""
    records: list[tuple[int, int, float]] = []
    deadline = time.monotonic() + timeout
    while not records or records[-1][:2] != until:
        left = deadline - time.monotonic()
        assert left > 0, f"no report of {until} within {timeout} s: {records}"
        if select.select([fd], [], [], left)[0]:
            data = os.read(fd, REPORT_RECORD.size * 64)
            assert data and len(data) % REPORT_RECORD.size == 0, data
            records.extend(REPORT_RECORD.iter_unpack(data))
    return records


@pytest.fixture
def report_pipe() -> Iterator[tuple[int, int]]:
    """(read end, write end) of a pipe a direct worker reports on; both closed at the end."""
    read, write = os.pipe()
    yield read, write
    for fd in (read, write):
        try:
            os.close(fd)
        except OSError:
            pass  # closed by the test already


@pytest.fixture
def linked() -> Iterator[tuple[socket.socket, socket.socket]]:
    """(the client's end, the end handed to the worker) of one TCP connection on 127.0.0.1."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        client = socket.create_connection(listener.getsockname(), timeout=20)
        served, _ = listener.accept()
    yield client, served
    client.close()
    served.close()


@pytest.fixture
def procs() -> Iterator[list[subprocess.Popen[bytes]]]:
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for proc in started:
        if proc.poll() is None:
            proc.kill()
        proc.wait(10)


def _greet(sock: socket.socket, conn: Connection) -> NodeInfo:
    sock.sendall(conn.data_to_send())
    while True:
        data = sock.recv(65536)
        assert data, "the direct worker closed the connection during its handshake"
        events = conn.receive_data(data)
        out = conn.data_to_send()
        if out:
            sock.sendall(out)
        for event in events:
            if isinstance(event, NodeInfo):
                return event


@pytest.mark.parametrize(("aes_gcm", "plain", "channel"), [(True, False, "aes-256-gcm"), (False, True, "")])
def test_a_direct_worker_speaks_only_after_the_client(linked, procs, aes_gcm, plain, channel):
    client, served = linked
    procs.append(start_direct_worker(served, SECRET, allow_plain=plain, aes_gcm=aes_gcm))
    served.close()  # the worker holds the connection now
    client.settimeout(0.5)
    with pytest.raises(TimeoutError):
        client.recv(1)  # nothing before our first bytes: our opening goes first
    client.settimeout(20)
    conn = Connection(Role.CLIENT, SECRET, aes_gcm=True, allow_plain=True)
    info = _greet(client, conn)
    assert (info.kind, info.workers) == ("worker", 1)
    assert conn.cipher == channel  # "": unsealed, as both ends agreed
    from ppft_client.shipping.functions import function_body

    body = function_body(triple)
    conn.send(body)
    conn.send(JobBatch((Job(5, body.digest, pickle.dumps((14,))),)))
    client.sendall(conn.data_to_send())
    while True:
        data = client.recv(65536)
        assert data
        batches = [e for e in conn.receive_data(data) if isinstance(e, ResultBatch)]
        if batches:
            break
    (result,) = batches[0].results
    assert result.ok and pickle.loads(result.value) == 42
    client.close()
    assert procs[0].wait(10) == 0  # EOF ends it


def test_a_sealed_direct_worker_refuses_an_unsealed_channel(linked, procs):
    client, served = linked
    procs.append(start_direct_worker(served, SECRET, allow_plain=False, aes_gcm=False))
    served.close()
    conn = Connection(Role.CLIENT, SECRET, allow_plain=True)
    _greet(client, conn)
    assert conn.cipher == "chacha20-poly1305"


def test_a_direct_worker_reports_its_counts_while_its_client_waits_and_as_it_ends(linked, procs, report_pipe):
    client, served = linked
    read, write = report_pipe
    procs.append(start_direct_worker(served, SECRET, allow_plain=True, aes_gcm=False, report_fd=write))
    served.close()
    os.close(write)  # the worker holds the only write end: EOF once it exits
    conn = Connection(Role.CLIENT, SECRET, allow_plain=True)
    _greet(client, conn)
    assert _serve_jobs(client, conn, [1, 2, "x", 4]) == [3, 6, "xxx", 12]
    assert _serve_jobs(client, conn, [[1]] * 3 + [None]) == [[1, 1, 1]] * 3 + [None]  # None * 3 raises
    records = _records(read, (8, 1))  # we send nothing more: it reports as it waits for us
    assert records == sorted(records) and records[-1][2] > 0
    client.close()
    assert procs[0].wait(10) == 0
    while os.read(read, REPORT_RECORD.size):
        pass  # its last report said nothing new (it had no new jobs): EOF ends it


@pytest.mark.parametrize("spoilt", ["full", "closed"])
def test_a_direct_worker_serves_on_when_its_report_pipe_is_full_or_closed(linked, procs, report_pipe, spoilt):
    client, served = linked
    read, write = report_pipe
    os.set_blocking(write, False)
    if spoilt == "full":
        try:
            while True:
                os.write(write, b"\0" * REPORT_RECORD.size)
        except BlockingIOError:
            pass
    else:
        os.close(read)
    procs.append(start_direct_worker(served, SECRET, allow_plain=True, aes_gcm=False, report_fd=write))
    served.close()
    conn = Connection(Role.CLIENT, SECRET, allow_plain=True)
    _greet(client, conn)
    for _ in range(3):  # across reports: at least one is due (0.5 s) and cannot be written
        assert _serve_jobs(client, conn, list(range(100))) == [3 * i for i in range(100)]
        time.sleep(0.6)  # no waiting for anything: time for a report to fall due, and for the idle one
    if spoilt == "full":  # the pipe drained, the next report says it all
        while select.select([read], [], [], 0)[0]:
            os.read(read, 1 << 16)
        assert _serve_jobs(client, conn, [1]) == [3]
        assert _records(read, (301, 0))[-1][:2] == (301, 0)
    client.close()
    assert procs[0].wait(10) == 0
