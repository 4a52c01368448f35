"""A hypothesis state machine plays an authenticated but buggy peer against a real ppserver subprocess.

The peer holds the secret (the client secret, or the workers secret as a dial-in worker) and sends random
sequences of every message type, valid and edge-case values, in any order: function bodies (real, forged,
random), job batches (fresh, reused and extreme ids, unknown functions, garbage arguments, any pickle
protocol), cancels, node infos of any kind and count, results, stats, heartbeats, byes, even handshake
messages after the handshake. Whenever the ppserver closes the session (as it should for a broken rule) the
peer reconnects and goes on. After each run the ppserver must still be up, with no traceback in its log, and
a real ppft client connected throughout must still get its jobs' values.

Bounded for the suite (a few seconds). A longer run by hand:

    PPFT_STATEFUL_EXAMPLES=300 PPFT_STATEFUL_STEPS=60 .venv/bin/python -m pytest -n 0 --timeout=3600 \\
        tests/test_ppserver_state_machine.py
"""

from __future__ import annotations

import os
import pickle
import socket
import time
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, rule, run_state_machine_as_test

import ppft
from clusterlib import SECRET, Cluster, Proc
from ppft_protocol import (
    Auth,
    AuthFailed,
    AuthOk,
    Bye,
    Cancel,
    Closed,
    Connection,
    FunctionBody,
    Heartbeat,
    Hello,
    Job,
    JobBatch,
    Message,
    NodeInfo,
    ProtocolError,
    Result,
    ResultBatch,
    Role,
    State,
    StatsReply,
    StatsRequest,
)
from ppft_protocol.errors import LocalProtocolError

WORKERS_SECRET = "state-machine workers secret"
EXAMPLES = int(os.environ.get("PPFT_STATEFUL_EXAMPLES", "15"))
STEPS = int(os.environ.get("PPFT_STATEFUL_STEPS", "15"))


def add_one(x):
    return x + 1


def echo(x):
    return x


def nap(seconds):
    import time

    time.sleep(min(seconds, 0.05))
    return seconds


def _bodies() -> list[FunctionBody]:
    from ppft_client.shipping.functions import function_body

    return [function_body(echo), function_body(nap)]


REAL = _bodies()

u64 = st.one_of(st.integers(0, 50), st.just(2**64 - 1), st.integers(0, 2**64 - 1))
u32 = st.one_of(st.integers(0, 8), st.just(2**32 - 1), st.integers(0, 2**32 - 1))
text = st.one_of(st.just(""), st.text(max_size=40), st.just("x" * 2000))
digest = st.one_of(st.sampled_from([b.digest for b in REAL]), st.binary(min_size=32, max_size=32))
args = st.one_of(
    st.builds(lambda v: pickle.dumps((v,)), st.one_of(st.integers(), st.text(max_size=20), st.none())),
    st.binary(max_size=64),
    st.just(b""),
)
proto = st.one_of(st.integers(0, 5), st.integers(0, 255))
random_body = st.builds(FunctionBody, digest, text, st.tuples(text), st.tuples(text), st.binary(max_size=32))
result = st.builds(Result, u64, st.booleans(), st.binary(max_size=32), text)


class HostilePeer(RuleBasedStateMachine):
    """One authenticated session after another against the ppserver at `port`, saying anything."""

    port = 0
    server: Proc | None = None
    client: Any = None

    def __init__(self) -> None:
        super().__init__()
        self.sock: socket.socket | None = None
        self.conn: Connection | None = None
        self.worker = False
        self.versions = (1, 2)
        self.ids: list[int] = []
        self.sessions = 0

    # -- the connection --------------------------------------------------------------------------------

    def _connect(self) -> None:
        self._close()
        secret = WORKERS_SECRET if self.worker else SECRET
        self.sock = socket.create_connection(("127.0.0.1", self.port), timeout=10)
        self.conn = Connection(Role.CLIENT, secret, versions=self.versions, worker=self.worker)
        self.sock.sendall(self.conn.data_to_send())
        deadline = time.monotonic() + 10
        while self.conn.state is not State.ESTABLISHED:
            assert time.monotonic() < deadline, "no handshake within 10 s: is the ppserver still up?"
            data = self.sock.recv(65536)
            assert data, "the ppserver closed a connection during its handshake"
            self.conn.receive_data(data)
            out = self.conn.data_to_send()
            if out:
                self.sock.sendall(out)
        self.sessions += 1

    def _close(self) -> None:
        if self.sock is not None:
            self.sock.close()
        self.sock = self.conn = None

    def _send(self, *messages: Message, raw: bool = False) -> None:
        """Send, reconnecting first if the ppserver closed the session; then read what came back."""
        if self.conn is None or self.conn.state is not State.ESTABLISHED:
            self._connect()
        assert self.conn is not None and self.sock is not None
        for message in messages:
            if raw:
                self.conn._send_frame(message)
            else:
                try:
                    self.conn.send(message)
                except LocalProtocolError:
                    return  # our own side refuses to encode it (a value out of its field's range)
        try:
            self.sock.sendall(self.conn.data_to_send())
        except OSError:
            self._close()
            return
        self._pump()

    def _pump(self) -> None:
        assert self.sock is not None and self.conn is not None
        self.sock.settimeout(0.01)
        try:
            while True:
                data = self.sock.recv(1 << 20)
                if not data:
                    self._close()
                    return
                for event in self.conn.receive_data(data):
                    if isinstance(event, Closed):
                        self._close()
                        return
        except (TimeoutError, BlockingIOError):
            return
        except (OSError, ProtocolError):
            self._close()

    # -- what it says ----------------------------------------------------------------------------------

    @initialize(worker=st.booleans(), versions=st.sampled_from([(1, 2), (1, 1)]))
    def start(self, worker: bool, versions: tuple[int, int]) -> None:
        self.worker = worker and versions == (1, 2)  # a version-1 peer cannot say it is a worker
        self.versions = versions
        self._connect()

    @rule(body=st.one_of(st.sampled_from(REAL), random_body))
    def function_body(self, body: FunctionBody) -> None:
        self._send(body)

    @rule(
        jobs=st.lists(st.tuples(st.one_of(u64, st.integers(0, 3)), digest, args, proto), max_size=6),
        known=st.booleans(),
    )
    def job_batch(self, jobs: list[tuple[int, bytes, bytes, int]], known: bool) -> None:
        messages: list[Message] = list(REAL) if known else []
        messages.append(JobBatch(tuple(Job(*job) for job in jobs)))
        self.ids += [job[0] for job in jobs]
        self._send(*messages)

    @rule(data=st.data())
    def cancel(self, data: st.DataObject) -> None:
        ids = data.draw(st.lists(st.one_of(u64, st.sampled_from(self.ids or [0])), max_size=8))
        if data.draw(st.booleans()):
            ids += list(range(1000))
        self._send(Cancel(tuple(ids)))

    @rule(kind=st.sampled_from(["worker", "client", "server", "", "WORKER"]), workers=u32, name=text)
    def node_info(self, kind: str, workers: int, name: str) -> None:
        self._send(NodeInfo(kind, workers, "2.0.0", name))

    @rule(results=st.lists(result, max_size=4))
    def result_batch(self, results: list[Result]) -> None:
        self._send(ResultBatch(tuple(results)))

    @rule(jobs_done=u64, workers=u32, clients=u32)
    def stats(self, jobs_done: int, workers: int, clients: int) -> None:
        self._send(StatsRequest(), StatsReply(jobs_done, 0.5, workers, clients))

    @rule()
    def heartbeat(self) -> None:
        self._send(Heartbeat())

    @rule(reason=text, with_request=st.booleans())
    def bye(self, reason: str, with_request: bool) -> None:
        self._send(*([StatsRequest()] if with_request else []), Bye(reason))
        self._close()

    @rule(which=st.sampled_from(["Hello", "Auth", "AuthOk", "AuthFailed"]))
    def handshake_message(self, which: str) -> None:
        message = {
            "Hello": Hello(b"n" * 32, 0),
            "Auth": Auth(b"p" * 32),
            "AuthOk": AuthOk(b"p" * 32),
            "AuthFailed": AuthFailed("no"),
        }[which]
        self._send(message, raw=True)

    def teardown(self) -> None:
        self._close()
        server = HostilePeer.server
        assert server is not None and server.popen.poll() is None, "the ppserver exited"
        job = HostilePeer.client.submit(add_one, (self.sessions,))
        assert job.result(timeout=30) == self.sessions + 1, "the ppserver no longer serves a real client"


@pytest.fixture
def target(cluster: Cluster) -> Iterator[Proc]:
    node = cluster.ppserver(1, extra=("--workers-secret", WORKERS_SECRET))
    client = ppft.Server(0, ppservers=(node.address,), secret=SECRET)
    try:
        assert client.submit(add_one, (0,)).result(timeout=60) == 1
        HostilePeer.port, HostilePeer.server, HostilePeer.client = node.port, node, client
        yield node
    finally:
        client.destroy()


@pytest.mark.timeout(600)
def test_a_buggy_authenticated_peer_never_ends_the_ppserver(cluster: Cluster, target: Proc) -> None:
    run_state_machine_as_test(
        HostilePeer,
        settings=settings(
            max_examples=EXAMPLES,
            stateful_step_count=STEPS,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
            database=None,
        ),
    )
    log = cluster.read_log(target)
    assert "Traceback" not in log, log[-4000:]
    assert target.popen.poll() is None
