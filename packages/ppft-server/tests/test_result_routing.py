"""ppserver hands each result back to the client that sent the job, under that client's job id: a worker's
result frame passed on undecoded (`NodeServer.raw_results`) or results the server made itself
(`NodeServer.results`), one frame per client, nothing to a client that left or for a job no longer in
flight."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from ppft_protocol import FunctionBody, Job, Message, Result, ResultBatch
from ppft_protocol.messages import decode_message, encode_message
from ppft_protocol.relay import decode_raw_results
from ppft_server.node import NodeServer
from ppft_worker.runtime.intake import ServedTask
from ppft_worker.runtime.tasks import Task

BODY = FunctionBody(b"f" * 32, "f", ("def f():\n    pass\n",))


class Client:
    """Stands for a session's stream: what the server sends it, decoded as the client would."""

    def __init__(self, closed: bool = False) -> None:
        self.closed = closed
        self.frames: list[ResultBatch] = []
        self.live: set[int] = set()  # the session's ids of its jobs not answered yet
        self.done = 0  # the session's jobs answered (the status page counts them)
        self.stream = self  # the session's stream: what it has not sent yet
        self.unsent = 0

    def send(self, message: Message) -> None:
        body = b"".join(bytes(part) for part in encode_message(message))
        decoded = decode_message(message.TYPE, memoryview(body))
        assert isinstance(decoded, ResultBatch)
        self.frames.append(decoded)


@pytest.fixture
def server() -> Iterator[NodeServer]:
    node = NodeServer(host="127.0.0.1", port=0, secret=b"s", workers=0)  # never served: no process, no socket
    yield node
    node.close()


def task(our_id: int, client: Client, client_id: int) -> ServedTask:
    return ServedTask(Job(our_id, BODY.digest, b"", 5), BODY, client, client_id)


def result(our_id: int) -> Result:
    """A value for an even id, an error for an odd one."""
    if our_id % 2 == 0:
        return Result(our_id, True, b"v%d" % our_id, f"out {our_id}", 0.5, 0.25)
    return Result(our_id, False, b"", f"out {our_id}", 0.5, 0.25, "E", f"m{our_id}", "tb", b"x")


def frame(*our_ids: int) -> bytes:
    return b"".join(encode_message(ResultBatch(tuple(result(i) for i in our_ids))))


def sent(client: Client) -> list[list[Result]]:
    return [list(batch.results) for batch in client.frames]


def as_client_sees(our_id: int, client_id: int) -> Result:
    return result(our_id)._replace(job_id=client_id)


def test_a_frame_of_one_clients_results_goes_back_as_one_frame_under_its_ids(server: NodeServer) -> None:
    alice = Client()
    tasks: list[Task | None] = [task(10, alice, 1), task(11, alice, 2), task(12, alice, 1 << 63)]
    server.raw_results(decode_raw_results(memoryview(frame(10, 11, 12))), tasks)
    assert sent(alice) == [[as_client_sees(10, 1), as_client_sees(11, 2), as_client_sees(12, 1 << 63)]]


def test_a_frame_of_several_clients_results_is_split_between_them_in_order(server: NodeServer) -> None:
    alice, bob = Client(), Client()
    tasks: list[Task | None] = [task(10, alice, 1), task(11, bob, 1), task(12, alice, 2), task(13, bob, 2)]
    server.raw_results(decode_raw_results(memoryview(frame(10, 11, 12, 13))), tasks)
    assert sent(alice) == [[as_client_sees(10, 1), as_client_sees(12, 2)]]
    assert sent(bob) == [[as_client_sees(11, 1), as_client_sees(13, 2)]]


def test_a_result_whose_task_is_no_longer_in_flight_goes_nowhere(server: NodeServer) -> None:
    alice = Client()
    tasks: list[Task | None] = [task(10, alice, 1), None, task(12, alice, 3)]
    server.raw_results(decode_raw_results(memoryview(frame(10, 11, 12))), tasks)
    assert sent(alice) == [[as_client_sees(10, 1), as_client_sees(12, 3)]]


def test_a_client_that_left_is_sent_nothing(server: NodeServer) -> None:
    gone, alice = Client(closed=True), Client()
    tasks: list[Task | None] = [task(10, gone, 1), task(11, alice, 1)]
    server.raw_results(decode_raw_results(memoryview(frame(10, 11))), tasks)
    server.raw_results(decode_raw_results(memoryview(frame(12))), [task(12, gone, 2)])
    assert gone.frames == []
    assert sent(alice) == [[as_client_sees(11, 1)]]


def test_results_the_server_made_go_back_under_the_clients_ids(server: NodeServer) -> None:
    alice, bob = Client(), Client()
    server.results([(task(10, alice, 5), result(10)), (task(11, bob, 6), result(11))])
    server.results([(task(12, alice, 7), result(12))])
    assert sent(alice) == [[as_client_sees(10, 5)], [as_client_sees(12, 7)]]
    assert sent(bob) == [[as_client_sees(11, 6)]]


# -- what the status page counts of the same frames -------------------------------------------------------


def _tally(server: NodeServer) -> dict[str, int]:
    return server.counters.tally.snapshot()


def test_a_frame_is_counted_once_by_outcome_and_for_each_client(server: NodeServer) -> None:
    alice, bob = Client(), Client()
    tasks: list[Task | None] = [task(10, alice, 1), task(11, bob, 1), task(12, alice, 2), task(14, bob, 2)]
    batch = decode_raw_results(memoryview(frame(10, 11, 12, 14)))
    assert batch.failures == 1  # the decoder counts them on its way
    server.raw_results(batch, tasks)
    assert _tally(server) == {"ok": 3, "error": 1, "lost": 0, "timeout": 0, "cancelled": 0}
    assert (alice.done, bob.done) == (2, 2)
    durations = server.counters.durations.snapshot()
    assert durations["count"] == 4 and durations["sum"] == 2.0


def test_results_no_longer_in_flight_are_not_counted(server: NodeServer) -> None:
    alice = Client()
    server.raw_results(decode_raw_results(memoryview(frame(10, 11, 12))), [task(10, alice, 1), None, None])
    assert _tally(server)["ok"] == 1 and _tally(server)["error"] == 0
    assert server.counters.durations.snapshot()["count"] == 1


def test_a_failed_job_of_a_client_that_left_counts_as_cancelled(server: NodeServer) -> None:
    gone = Client(closed=True)
    server.raw_results(decode_raw_results(memoryview(frame(11, 12))), [task(11, gone, 1), task(12, gone, 2)])
    assert _tally(server) == {"ok": 1, "error": 0, "lost": 0, "timeout": 0, "cancelled": 1}


def test_results_the_server_made_are_counted_by_their_error_type(server: NodeServer) -> None:
    alice = Client()
    lost = Result(21, False, b"", "", 0.0, 0.0, "ppft_worker.errors.WorkerLostError", "died", "", b"")
    pairs = [(task(20, alice, 1), result(20)), (task(21, alice, 2), lost), (task(23, alice, 3), result(23))]
    server.results(pairs)  # type: ignore[arg-type]
    assert _tally(server) == {"ok": 1, "error": 1, "lost": 1, "timeout": 0, "cancelled": 0}
    assert alice.done == 3
