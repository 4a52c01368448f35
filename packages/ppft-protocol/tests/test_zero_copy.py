"""Large payloads through a connection without copies: `data_to_send_parts()` hands them out as the very
objects the messages hold, and `receive_buffer()` / `receive_into()` let the owner read a large body straight
into the buffer it is assembled in. The bytes on the wire are those `data_to_send()` gives."""

from __future__ import annotations

import hashlib
from collections.abc import Callable

import pytest

from ppft_protocol import (
    Connection,
    FunctionBody,
    Heartbeat,
    Job,
    JobBatch,
    LocalProtocolError,
    Result,
    ResultBatch,
)

Pair = tuple[Connection, Connection]
DIGEST = hashlib.sha256(b"f").digest()
BIG = bytes(range(256)) * 1024  # 256 KiB


def _queue_jobs(conn: Connection, *payloads: bytes) -> None:
    conn.send(FunctionBody(DIGEST, "f", ("def f(x):\n    return x\n",)))
    conn.send(JobBatch(tuple(Job(i, DIGEST, p) for i, p in enumerate(payloads))))


def _read_in_place(conn: Connection, data: bytes, chunk: int) -> list[object]:
    """Feed `data` as an owner reading `chunk` bytes at a time would, into `receive_buffer()` when offered."""
    events: list[object] = []
    off = 0
    while off < len(data):
        view = conn.receive_buffer()
        if view is None:
            events += conn.receive_data(data[off : off + chunk])
            off += chunk
            continue
        n = min(chunk, len(view), len(data) - off)
        view[:n] = data[off : off + n]  # what os.readv / recv_into would write
        view.release()
        events += conn.receive_into(n)
        off += n
    return events


@pytest.mark.parametrize("plain", [True, False], ids=["plain", "sealed"])
def test_parts_carry_exactly_the_bytes_data_to_send_would(
    established: Callable[..., Pair], plain: bool
) -> None:
    nonces = {"client_nonce": bytes(32), "server_nonce": bytes([1]) * 32}  # the same keys for both pairs
    a, _ = established(allow_plain=plain, **nonces)
    b, _ = established(allow_plain=plain, **nonces)
    for conn in (a, b):
        _queue_jobs(conn, b"small", BIG, b"tiny", BIG + b"!")
    assert b"".join(a.data_to_send_parts()) == b.data_to_send()


def test_large_payload_is_its_own_part_uncopied(established: Callable[..., Pair]) -> None:
    client, _ = established(allow_plain=True)
    _queue_jobs(client, b"small", BIG, b"tiny")
    parts = client.data_to_send_parts()
    assert any(part is BIG for part in parts)
    assert len(parts) == 3  # small parts before and after the payload are joined


def test_small_traffic_is_one_part(established: Callable[..., Pair]) -> None:
    client, _ = established(allow_plain=True)
    client.send(Heartbeat())
    _queue_jobs(client, b"a", b"b")
    parts = client.data_to_send_parts()
    assert len(parts) == 1
    assert client.data_to_send_parts() == []


def test_parts_are_taken_once(established: Callable[..., Pair]) -> None:
    client, _ = established(allow_plain=True)
    _queue_jobs(client, BIG)
    assert client.data_to_send_parts()
    assert client.data_to_send() == b""


def test_no_receive_buffer_without_a_large_frame_on_its_way(established: Callable[..., Pair]) -> None:
    client, server = established(allow_plain=True)
    assert server.receive_buffer() is None
    client.send(Heartbeat())
    server.receive_data(client.data_to_send())
    assert server.receive_buffer() is None


def test_large_frame_read_in_place_into_a_released_buffer(established: Callable[..., Pair]) -> None:
    client, server = established(allow_plain=True)
    _queue_jobs(client, BIG)
    first = _read_in_place(server, client.data_to_send(), 65536)
    (args,) = [job.args for event in first if isinstance(event, JobBatch) for job in event.jobs]
    buffer = args.obj  # type: ignore[union-attr]
    del first, args
    second_payload = bytes(reversed(BIG))
    client.send(JobBatch((Job(7, DIGEST, second_payload),)))
    data = client.data_to_send()
    head = server.receive_data(data[:1000])  # the frame starts: its buffer is the released one
    view = server.receive_buffer()
    assert view is not None and view.obj is buffer
    view.release()
    second = head + _read_in_place(server, data[1000:], 65536)
    (batch,) = second
    assert isinstance(batch, JobBatch)
    assert batch.jobs[0].args == second_payload
    assert batch.jobs[0].args.obj is buffer  # type: ignore[union-attr]


@pytest.mark.parametrize("plain", [True, False], ids=["plain", "sealed"])
def test_frames_read_in_place_decode_as_received_data_does(
    established: Callable[..., Pair], plain: bool
) -> None:
    client, server = established(allow_plain=plain)
    results = tuple(Result(i, True, BIG[i:] + bytes([i]), f"out {i}") for i in range(3))
    for _ in range(3):
        server.send(ResultBatch(results))
        server.send(Heartbeat())
    events = _read_in_place(client, server.data_to_send(), 100_000)
    assert events == [ResultBatch(results), Heartbeat()] * 3


def test_receive_into_without_a_buffer_is_refused(established: Callable[..., Pair]) -> None:
    _, server = established(allow_plain=True)
    with pytest.raises(LocalProtocolError, match="receive_buffer"):
        server.receive_into(10)


def test_receive_into_zero_bytes_is_refused(established: Callable[..., Pair]) -> None:
    _, server = established(allow_plain=True)
    with pytest.raises(LocalProtocolError, match="receive_data"):
        server.receive_into(0)
