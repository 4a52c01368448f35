"""Function bodies across real processes: checked against their digests before anything keeps or forwards
them, and kept within a budget by every worker and ppserver, however many distinct functions a client sends.
"""

from __future__ import annotations

import pickle
import socket

import pytest

from clusterlib import SECRET, Cluster, wait_until
from ppft_protocol import (
    Connection,
    FunctionBody,
    Job,
    JobBatch,
    NodeInfo,
    Result,
    ResultBatch,
    Role,
    function_digest,
)
from scriptlib import run_script

GENUINE = "def f(x):\n    return ('genuine', x)\n"
EVIL = "def f(x):\n    return ('evil', x)\n"


class RawClient:
    """A client that speaks the protocol itself, over a blocking socket, to send exactly what a test says."""

    def __init__(self, port: int, versions: tuple[int, int] = (1, 2)) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=20)
        self.conn = Connection(Role.CLIENT, SECRET, versions=versions)
        self.results: dict[int, Result] = {}
        self.sock.sendall(self.conn.data_to_send())
        self._read_until(lambda events: any(isinstance(e, NodeInfo) for e in events))

    def _read_until(self, done) -> None:  # type: ignore[no-untyped-def]
        seen: list[object] = []
        while not done(seen):
            data = self.sock.recv(1 << 20)
            assert data, "the ppserver closed the connection"
            events = self.conn.receive_data(data)
            out = self.conn.data_to_send()
            if out:
                self.sock.sendall(out)
            for event in events:
                seen.append(event)
                if isinstance(event, ResultBatch):
                    self.results.update((r.job_id, r) for r in event.results)

    def run(self, body: FunctionBody, job_id: int, *args: object) -> Result:
        self.conn.send(body)
        self.conn.send(JobBatch((Job(job_id, body.digest, pickle.dumps(args)),)))
        self.sock.sendall(self.conn.data_to_send())
        self._read_until(lambda _: job_id in self.results)
        return self.results[job_id]

    def close(self) -> None:
        self.sock.close()


def test_a_forged_body_cannot_pose_as_another_clients_function(cluster: Cluster) -> None:
    """A client sends a body under the digest of another client's function, with its own code: the ppserver
    refuses it (its job fails naming the mismatch, the log names the client), and the other client's job,
    on the same single worker, runs the genuine function."""
    node = cluster.ppserver(1)
    genuine = FunctionBody(function_digest("f", (GENUINE,), (), b""), "f", (GENUINE,))
    forged = FunctionBody(genuine.digest, "f", (EVIL,))
    attacker = RawClient(node.port)
    victim = RawClient(node.port)
    try:
        refused = attacker.run(forged, 1, 1)
        assert not refused.ok and refused.error_type == "ppft_worker.errors.JobSetupError"
        assert "digest does not match its content" in refused.error_message
        result = victim.run(genuine, 7, 2)
        assert result.ok and pickle.loads(result.value) == ("genuine", 2)
    finally:
        attacker.close()
        victim.close()
    wait_until(lambda: "refused" in cluster.read_log(node), 10, "the refusal in the ppserver log")
    assert "sent a function body that is refused" in cluster.read_log(node)


def _expected(second: list[int], count: int) -> int:
    """How many functions the second pass found still held, checking the shape: all the held ones first."""
    kept = second.count(2)
    assert second == [2] * kept + [1] * (count - kept), second
    return kept


@pytest.mark.parametrize("mode", ["local", "ppserver"])
def test_many_large_functions_keep_workers_within_their_budget(mode: str, cluster: Cluster) -> None:
    """80 distinct functions of 1 MiB each, twice over: every job runs, the worker (and the ppserver between)
    keeps only the newest 64 MiB of them, and a forgotten one is sent again and rebuilt when it is used."""
    env = {"COUNT": "80"}
    if mode == "ppserver":
        env["PPSERVER"] = cluster.ppserver(1).address
    ran = run_script("many_functions.py", env=env).check()
    first, second = ([int(n) for n in line.split()] for line in ran.stdout.splitlines())
    assert first == [1] * 80
    kept = _expected(second, 80)
    assert 50 <= kept < 80


def test_a_ppserver_session_forgets_bodies_beyond_the_budget(cluster: Cluster) -> None:
    """A client that sends body after body (never a job) makes the ppserver keep only the budget's worth."""
    node = cluster.ppserver(1)
    client = RawClient(node.port)
    try:
        pad = "#" + "y" * (1 << 20) + "\n"
        bodies = []
        for i in range(80):
            source = f"def g{i}():\n    return {i}\n{pad}"
            bodies.append(FunctionBody(function_digest(f"g{i}", (source,), (), b""), f"g{i}", (source,)))
            client.conn.send(bodies[-1])
            client.sock.sendall(client.conn.data_to_send())
        # the newest body is held, the oldest was forgotten: its job is answered as never sent (a client bug,
        # since a client counts the same budget and sends a forgotten body again: the session is then closed)
        for job in (Job(1, bodies[-1].digest, pickle.dumps(())), Job(2, bodies[0].digest, b"")):
            client.conn.send(JobBatch((job,)))
            client.sock.sendall(client.conn.data_to_send())
            client._read_until(lambda _, job_id=job.job_id: job_id in client.results)
        assert client.results[1].ok and pickle.loads(client.results[1].value) == 79
        assert not client.results[2].ok and "never sent" in client.results[2].error_message
    finally:
        client.close()


def test_a_ppft_2_0_0_client_still_connects_on_version_1_and_its_bodies_are_kept(cluster: Cluster) -> None:
    """A client of ppft 2.0.0 (versions 1-1, no downgrade flag in its Hello) talks version 1 with a current
    ppserver, which keeps every body it sends (version 1 never sends one twice), checked all the same; the
    ppserver's own workers (version 2) forget and get bodies again as they need them."""
    node = cluster.ppserver(1)
    old = RawClient(node.port, versions=(1, 1))
    try:
        assert old.conn.version == 1
        bodies = []
        for i in range(70):  # 70 MiB: over the budget of a version-2 link
            source = f"def h{i}():\n    return {i}\n#{'z' * (1 << 20)}\n"
            bodies.append(FunctionBody(function_digest(f"h{i}", (source,), (), b""), f"h{i}", (source,)))
            assert old.run(bodies[-1], i + 1).ok
        again = old.conn  # the first body, never sent again: still held
        again.send(JobBatch((Job(100, bodies[0].digest, pickle.dumps(())),)))
        old.sock.sendall(again.data_to_send())
        old._read_until(lambda _: 100 in old.results)
        assert old.results[100].ok and pickle.loads(old.results[100].value) == 0
    finally:
        old.close()
