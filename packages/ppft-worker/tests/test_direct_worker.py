"""A direct worker (`ppft_worker.pool.start_direct_worker`) on a real TCP connection, without a ppserver: it
says nothing before the client's first bytes, then runs the handshake and the worker loop; what its channel
may be comes from the starter (sealed, AES-256-GCM offered, or unsealed)."""

from __future__ import annotations

import pickle
import socket
import subprocess
from collections.abc import Iterator

import pytest

from ppft_protocol import Connection, Job, JobBatch, NodeInfo, ResultBatch, Role
from ppft_worker.pool import start_direct_worker

SECRET = b"direct worker secret"


def triple(x):
    return 3 * x


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
