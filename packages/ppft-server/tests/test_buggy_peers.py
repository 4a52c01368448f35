"""An authenticated but buggy peer: whatever it sends, the ppserver stays up and serves everyone else.

Each peer here is a raw protocol connection holding the secret, sending what a buggy client or dial-in worker
might: cancels of queued jobs, absurd worker counts, reused job ids, changed function bodies, jobs of unknown
functions, results from a client, jobs from a worker. A rule broken closes that one session with a `Bye`
naming the rule; a cancelled job is answered as cancelled.
"""

from __future__ import annotations

import pickle
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from ppft_protocol import (
    Cancel,
    FunctionBody,
    Job,
    JobBatch,
    NodeInfo,
    Put,
    PutRefused,
    Release,
    Result,
    ResultBatch,
)

CANCELLED = "concurrent.futures.CancelledError"


def job(job_id: int, body: FunctionBody, *args: object) -> Job:
    return Job(job_id, body.digest, pickle.dumps(args), 5)


@pytest.fixture
def ppserver(start_ppserver: Callable[..., Any], free_port: int) -> Callable[..., int]:
    """Start a ppserver on 127.0.0.1 with these extra flags; its port."""

    def start(*flags: str, workers: int = 1) -> int:
        server = start_ppserver("-i", "127.0.0.1", "-p", str(free_port), "-w", str(workers), *flags)
        server.wait_started()
        start.server = server  # type: ignore[attr-defined]
        return free_port

    return start


def still_serves(connect: Callable[..., Any], port: int, bodies: dict[str, FunctionBody]) -> None:
    """A new client gets a job's value from the ppserver."""
    peer = connect(port).established()
    (result,) = peer.run(bodies["echo"], ("still here",), first_id=7)
    assert result.ok and pickle.loads(result.value) == "still here"


def test_cancel_of_every_queued_job_answers_each_and_the_server_survives(
    ppserver: Callable[..., int], connect: Callable[..., Any], bodies: dict[str, FunctionBody], tmp_path: Path
) -> None:
    """Reproduced: a Cancel emptied a client's lane behind the queue's back; the next dispatch raised
    IndexError and the ppserver exited. Cancelled jobs were never answered."""
    port = ppserver()
    nap, mark = bodies["nap"], str(tmp_path / "started")
    alice, bob = connect(port).established(), connect(port).established()
    alice.send(nap, JobBatch((job(1, nap, 1.0, mark),)))
    alice.wait_for(lambda _: Path(mark).exists(), what="job 1 to start")
    alice.send(JobBatch(tuple(job(i, nap, 0) for i in (2, 3, 4))))  # queued behind job 1: one worker
    bob.send(nap, JobBatch(tuple(job(i, nap, 0) for i in (1, 2))))
    alice.pump()
    alice.send(Cancel((2, 3, 4, 99)))  # 99: never sent, ignored
    alice.wait_for(lambda p: {2, 3, 4} <= p.results().keys(), what="the cancelled jobs' answers")
    for job_id in (2, 3, 4):
        result = alice.results()[job_id]
        assert (result.ok, result.error_type, result.error_message) == (
            False, CANCELLED, "cancelled before it started",
        )  # fmt: skip
    alice.wait_for(lambda p: 1 in p.results(), what="the running job's result")
    assert alice.results()[1].ok  # a job already running finishes and reports
    bob.wait_for(lambda p: {1, 2} <= p.results().keys(), what="the other client's results")
    assert all(r.ok for r in bob.results().values())
    still_serves(connect, port, bodies)


def test_a_dial_in_with_absurd_worker_count_is_refused_alone(
    ppserver: Callable[..., int], connect: Callable[..., Any], bodies: dict[str, FunctionBody]
) -> None:
    """Reproduced: a NodeInfo with 2**32-1 workers made the ppserver's capacity overflow its u32 field
    while telling its clients, and the ppserver died."""
    port = ppserver("--accept-workers")
    client = connect(port).established()
    worker = connect(port, worker=True).established()
    worker.send(NodeInfo("worker", 2**32 - 1, "2", "huge"))
    reason = worker.wait_closed()
    assert "announced 4294967295 workers; at most 65536 are accepted from one connection" in reason
    (result,) = client.run(bodies["echo"], (1,))
    assert result.ok
    still_serves(connect, port, bodies)


def test_a_dial_in_that_grows_is_told_to_clients(
    ppserver: Callable[..., int], connect: Callable[..., Any]
) -> None:
    port = ppserver("--accept-workers", workers=1)
    client = connect(port).established()
    client.wait_for(lambda p: any(isinstance(e, NodeInfo) and e.workers == 1 for e in p.events), what="1")
    worker = connect(port, worker=True).established()
    worker.send(NodeInfo("worker", 3, "2", "w"))
    client.wait_for(lambda p: any(isinstance(e, NodeInfo) and e.workers == 4 for e in p.events), what="4")
    worker.send(NodeInfo("worker", 65536, "2", "w"))
    client.wait_for(lambda p: any(isinstance(e, NodeInfo) and e.workers == 65537 for e in p.events), what="+")


@pytest.mark.parametrize(
    ("second", "rule"),
    [
        ((2, 1), "belong to jobs still in flight on this connection"),
        ((3, 3), "job id 3 appears twice in one JobBatch"),
    ],
    ids=["reused", "twice-in-a-batch"],
)
def test_job_ids_reused_while_in_flight_close_the_session(
    ppserver: Callable[..., int], connect: Callable[..., Any], bodies: dict[str, FunctionBody],
    tmp_path: Path, second: tuple[int, int], rule: str,
) -> None:  # fmt: skip
    port = ppserver()
    nap, mark = bodies["nap"], str(tmp_path / "started")
    peer = connect(port).established()
    peer.send(nap, JobBatch((job(1, nap, 0.5, mark),)))
    peer.wait_for(lambda _: Path(mark).exists(), what="job 1 to start")
    peer.send(JobBatch(tuple(job(i, nap, 0) for i in second)))
    assert rule in peer.wait_closed()
    still_serves(connect, port, bodies)


def test_a_job_id_may_be_used_again_once_answered(
    ppserver: Callable[..., int], connect: Callable[..., Any], bodies: dict[str, FunctionBody]
) -> None:
    port = ppserver()
    peer = connect(port).established()
    assert [r.ok for r in peer.run(bodies["echo"], (1,), (2,))] == [True, True]
    peer.events.clear()
    assert [pickle.loads(r.value) for r in peer.run(bodies["echo"], (3,), (4,))] == [3, 4]


def test_a_function_body_that_does_not_match_its_digest_is_refused_and_never_runs(
    ppserver: Callable[..., int], connect: Callable[..., Any], bodies: dict[str, FunctionBody]
) -> None:
    port = ppserver()
    echo = bodies["echo"]
    forged = FunctionBody(echo.digest, "echo", ("def echo(x):\n    return 'forged'\n",))
    holder = connect(port).established()
    holder.send(echo)
    holder.send(echo)  # the same body twice: harmless
    assert [pickle.loads(r.value) for r in holder.run(echo, (1,))] == [1]
    other = connect(port).established()
    (refused,) = other.run(forged, (1,))  # the forged body is refused; its job fails, saying why
    assert not refused.ok and "digest" in refused.error_message
    holder.events.clear()
    holder.send(forged)  # refused too, and the genuine body it sent before stays
    assert [pickle.loads(r.value) for r in holder.run(echo, (2,), first_id=2)] == [2]
    still_serves(connect, port, bodies)


def test_a_job_for_an_unknown_function_is_answered_and_closes_the_session(
    ppserver: Callable[..., int], connect: Callable[..., Any], bodies: dict[str, FunctionBody]
) -> None:
    port = ppserver()
    peer = connect(port).established()
    peer.send(JobBatch((Job(5, b"\x01" * 32, pickle.dumps(()), 5),)))
    reason = peer.wait_closed()
    assert "job 5 refers to function 010101010101 that was never sent on this connection" in reason
    assert peer.results()[5].error_type == "ppft_protocol.errors.RemoteProtocolError"
    still_serves(connect, port, bodies)


@pytest.mark.parametrize(
    ("message", "rule"),
    [
        (ResultBatch((Result(1, True, pickle.dumps(1)),)), "a client sent results (ResultBatch)"),
        (NodeInfo("server", 4, "2", "x"), "a client said it was a 'server'"),
    ],
    ids=["results", "nodeinfo-server"],
)
def test_what_a_client_does_not_send_closes_its_session(
    ppserver: Callable[..., int], connect: Callable[..., Any], bodies: dict[str, FunctionBody],
    message: Any, rule: str,
) -> None:  # fmt: skip
    port = ppserver()
    peer = connect(port).established()
    peer.send(message)
    reason = peer.wait_closed()
    assert reason.startswith("session closed by the ppserver: ") and rule in reason
    line = f"closed the session of client 127.0.0.1:\\d+: {re.escape(rule)}"
    ppserver.server.wait_for_line(line)  # type: ignore[attr-defined]
    still_serves(connect, port, bodies)


@pytest.mark.parametrize("first", [True, False], ids=["before-nodeinfo", "after-nodeinfo"])
def test_a_dial_in_worker_cannot_submit_jobs(
    ppserver: Callable[..., int], connect: Callable[..., Any], bodies: dict[str, FunctionBody], first: bool
) -> None:
    """The workers secret lets a process run jobs, not have jobs run: a worker's JobBatch is refused."""
    port = ppserver("--workers-secret", "w-secret")
    worker = connect(port, "w-secret", worker=True).established()
    if not first:
        worker.send(NodeInfo("worker", 1, "2", "w"))
    worker.send(bodies["echo"], JobBatch((job(1, bodies["echo"], 1),)))
    assert "a dial-in worker sent FunctionBody: a worker runs jobs" in worker.wait_closed()
    still_serves(connect, port, bodies)


@pytest.mark.parametrize("ask", ["StatsRequest", "NodeInfo"])
def test_a_request_and_bye_in_one_write_do_not_end_the_server(
    ppserver: Callable[..., int], connect: Callable[..., Any], bodies: dict[str, FunctionBody], ask: str
) -> None:
    """The answer to a request that arrived with the peer's Bye, in one read, has nowhere to go: found
    while writing these tests (the ppserver raised LocalProtocolError on its I/O thread and exited)."""
    from ppft_protocol import Bye, StatsRequest

    port = ppserver() if ask == "StatsRequest" else ppserver("--accept-workers")
    if ask == "StatsRequest":
        peer = connect(port).established()
        peer.send(StatsRequest(), Bye("leaving"))
    else:  # a dial-in joining: the ppserver tells its clients of the new capacity
        connect(port).established()
        peer = connect(port, worker=True).established()
        peer.send(NodeInfo("worker", 2, "2", "w"), Bye("leaving"))
    peer.wait_closed()
    still_serves(connect, port, bodies)


class _RefTo:
    """Pickles as a `put()` ref to `ref_id`, as a client's `Ref` does."""

    def __init__(self, ref_id: int) -> None:
        self.ref_id = ref_id

    def __reduce__(self) -> tuple[Any, tuple[int]]:
        from ppft_worker.process import resolve_ref

        return resolve_ref, (self.ref_id,)


def test_a_client_cannot_take_or_release_another_client_s_ref(
    ppserver: Callable[..., int], connect: Callable[..., Any], bodies: dict[str, FunctionBody]
) -> None:
    port = ppserver()
    owner = connect(port).established()
    owner.send(Put(0x51, pickle.dumps("the owner's object")))
    (first,) = owner.run(bodies["echo"], (_RefTo(0x51),))
    assert pickle.loads(first.value) == "the owner's object"
    thief = connect(port).established()
    thief.send(Put(0x51, pickle.dumps("not yours")), Release((0x51,)))
    thief.wait_for(
        lambda p: any(isinstance(e, PutRefused) and e.ref_id == 0x51 for e in p.events), what="its PutRefused"
    )
    (refused,) = [e for e in thief.events if isinstance(e, PutRefused)]
    assert "held for another client" in refused.reason
    (again,) = owner.run(bodies["echo"], (_RefTo(0x51),), first_id=2)
    assert pickle.loads(again.value) == "the owner's object"
    assert thief.closed is None and owner.closed is None


@pytest.mark.parametrize(
    ("worker", "message", "rule"),
    [
        (False, PutRefused(3, "no"), "a client does not send PutRefused to a ppserver"),
        (True, Put(3, pickle.dumps(1)), "a dial-in worker does not send Put to a ppserver"),
        (True, Release((3,)), "a dial-in worker does not send Release to a ppserver"),
    ],
    ids=["client-putrefused", "worker-put", "worker-release"],
)
def test_ref_messages_out_of_role_close_only_that_session(
    ppserver: Callable[..., int], connect: Callable[..., Any], bodies: dict[str, FunctionBody],
    worker: bool, message: Any, rule: str,
) -> None:  # fmt: skip
    port = ppserver("--accept-workers")
    peer = connect(port, worker=worker).established()
    if worker:
        peer.send(NodeInfo("worker", 1, "2", "w"))
    peer.send(message)
    assert rule in peer.wait_closed()
    still_serves(connect, port, bodies)
