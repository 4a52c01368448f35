"""Results passed on without decoding (ppft_protocol.relay), and results passed on under other job ids
(`ForwardedResults`): what the peer decodes is exactly the `ResultBatch` those results make, and raw
decoding refuses exactly what the `ResultBatch` decoder refuses."""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ppft_protocol import (
    Connection,
    DecodeError,
    FunctionBody,
    Heartbeat,
    Job,
    JobBatch,
    Result,
    ResultBatch,
)
from ppft_protocol.batches import ForwardedResults
from ppft_protocol.codec import Reader
from ppft_protocol.messages import decode_message, encode_message
from ppft_protocol.relay import RawResults, ResultRecords, decode_raw_results

Pair = tuple[Connection, Connection]
DIGEST = hashlib.sha256(b"def f(x):\n    return x\n").digest()
BIG = bytes(range(256)) * 1024  # 256 KiB: a body holding it is forwarded as views, not copied

OK = Result(1, True, b"\x80\x05K\x02.", "", 0.25, 0.125)
WITH_OUTPUT = Result(2, True, b"\x80\x05N.", "printed \u2603 \udc80\n", 0.5, 0.5)
FAILED = Result(
    3, False, b"", "partial\n", 1.0, 0.75, "builtins.ZeroDivisionError", "division by zero", "Traceback\n",
    b"\x80\x05pickled-exception",
)  # fmt: skip
UNPICKLABLE = Result(4, False, b"", "", 0.0, 0.0, "module.Unpicklable", "no pickle", "tb", b"")
LARGE = Result(5, True, BIG, "", 2.0, 1.0)
STDERR = Result(6, True, b"\x80\x05N.", "out\nerr \u2603\nout\n", 0.5, 0.5, "", "", "", b"", ((4, 12),))
FAILED_STDERR = FAILED._replace(job_id=7, output="partial\nwhy\n", stderr_spans=((8, 12),))
BATCHES = {
    "empty": (),
    "one": (OK,),
    "mixed": (OK, WITH_OUTPUT, FAILED, UNPICKLABLE),
    "large": (OK, LARGE, FAILED),
    "stderr": (OK, STDERR, FAILED_STDERR, WITH_OUTPUT),
    "many": tuple(Result(i, True, b"v" * (i % 7), "", i / 100, 0.0) for i in range(2**40, 2**40 + 300)),
}


def body_of(results: tuple[Result, ...]) -> bytes:
    return b"".join(encode_message(ResultBatch(results)))


def renumbered(results: tuple[Result, ...], ids: list[int]) -> tuple[Result, ...]:
    return tuple(result._replace(job_id=job_id) for result, job_id in zip(results, ids, strict=True))


def decoded(message: ResultRecords | ForwardedResults | RawResults) -> ResultBatch:
    """What the peer makes of `message`: the bytes it encodes to, decoded as the frame type it carries."""
    body = b"".join(bytes(part) for part in encode_message(message))
    result = decode_message(message.TYPE, memoryview(body))
    assert isinstance(result, ResultBatch)
    return result


@pytest.mark.parametrize("name", BATCHES)
def test_raw_results_index_every_result_as_the_decoder_sees_it(name: str) -> None:
    results = BATCHES[name]
    raw = decode_raw_results(memoryview(body_of(results)))
    assert raw.job_ids == tuple(r.job_id for r in results)
    assert raw.wall_times == tuple(r.wall_time for r in results)
    assert raw.results() == results


@pytest.mark.parametrize("name", BATCHES)
def test_raw_results_encode_as_the_batch_they_were(name: str) -> None:
    body = body_of(BATCHES[name])
    raw = decode_raw_results(memoryview(body))
    assert b"".join(bytes(part) for part in encode_message(raw)) == body


@pytest.mark.parametrize("name", BATCHES)
def test_forwarding_every_result_changes_their_job_ids_and_nothing_else(name: str) -> None:
    results = BATCHES[name]
    ids = [10_000 + 7 * i for i in range(len(results))]
    raw = decode_raw_results(memoryview(body_of(results)))
    assert decoded(raw.forward(ids)).results == renumbered(results, ids)


def test_forwarding_picked_results_sends_those_in_the_order_picked() -> None:
    results = BATCHES["mixed"]
    raw = decode_raw_results(memoryview(body_of(results)))
    forwarded = decoded(raw.forward([70, 80, 90], [3, 0, 2])).results
    assert forwarded == renumbered((results[3], results[0], results[2]), [70, 80, 90])


def test_forwarding_no_result_is_an_empty_batch() -> None:
    raw = decode_raw_results(memoryview(body_of(BATCHES["mixed"])))
    assert decoded(raw.forward([], [])).results == ()


def test_forwarding_a_large_body_hands_its_values_out_uncopied() -> None:
    body = bytearray(body_of(BATCHES["large"]))  # a frame the decoder assembled in a buffer of its own
    raw = decode_raw_results(memoryview(body))
    parts = raw.forward([7, 8, 9]).parts
    assert any(isinstance(p, memoryview) and p.obj is body and len(p) > len(BIG) for p in parts)
    assert decoded(raw.forward([7, 8, 9])).results == renumbered(BATCHES["large"], [7, 8, 9])


@pytest.mark.parametrize("picks", [None, [0, 1]])
def test_forwarding_needs_one_job_id_per_result(picks: list[int] | None) -> None:
    raw = decode_raw_results(memoryview(body_of(BATCHES["mixed"])))
    with pytest.raises(ValueError, match="one id per result"):
        raw.forward([1, 2, 3], picks)


def test_forwarded_results_travel_as_a_result_batch_under_the_given_ids() -> None:
    results = BATCHES["mixed"]
    ids = (2**64 - 1, 0, 5, 6)
    assert decoded(ForwardedResults(ids, results)).results == renumbered(results, list(ids))


def test_forwarded_results_need_one_job_id_per_result() -> None:
    with pytest.raises(ValueError, match="one id per result"):
        ForwardedResults((1,), BATCHES["mixed"])


def _malformed_bodies() -> list[bytes]:
    """Result batch bodies the decoder must refuse: every cut of a valid one, and each kind of bad field."""
    body = body_of(BATCHES["mixed"])
    ok_head = struct.pack(">IQBddII", 1, 9, 1, 0.0, 0.0, 0, 1)
    failed_head = struct.pack(">IQBddII", 1, 9, 0, 0.0, 0.0, 0, 0)
    return [
        *(body[:cut] for cut in range(len(body))),
        body + b"\x00",  # trailing byte
        ok_head + b"\xc3",  # output that is not UTF-8
        struct.pack(">IQBddII", 1, 9, 2, 0.0, 0.0, 0, 0),  # unknown status
        struct.pack(">I", 1000) + bytes(33),  # more results than the body can hold
        failed_head + struct.pack(">I", 1) + b"\xff" + bytes(12),  # error type that is not UTF-8
        failed_head + bytes(12) + struct.pack(">I", 5) + b"abc",  # exception runs past the body
    ]


def test_raw_decoding_refuses_every_body_the_batch_decoder_refuses() -> None:
    for body in _malformed_bodies():
        with pytest.raises(DecodeError):
            decode_message(ResultBatch.TYPE, memoryview(body))
        with pytest.raises(DecodeError):
            decode_raw_results(memoryview(body))


@settings(max_examples=300, deadline=None)
@given(
    name=st.sampled_from(sorted(BATCHES)),
    edits=st.lists(st.tuples(st.integers(min_value=0), st.integers(0, 255)), max_size=4),
    cut=st.integers(min_value=0),
)
def test_raw_decoding_accepts_exactly_what_the_batch_decoder_accepts(
    name: str, edits: list[tuple[int, int]], cut: int
) -> None:
    body = bytearray(body_of(BATCHES[name]))
    for at, value in edits:
        if body:
            body[at % len(body)] = value
    data = bytes(body[: len(body) - cut % (len(body) + 1)])
    try:
        expected = decode_message(ResultBatch.TYPE, memoryview(data))
    except DecodeError:
        with pytest.raises(DecodeError):
            decode_raw_results(memoryview(data))
        return
    assert isinstance(expected, ResultBatch)
    assert decode_raw_results(memoryview(data)).results() == expected.results


@pytest.mark.parametrize("plain", [False, True], ids=["sealed", "plain"])
def test_a_connection_told_so_hands_result_frames_over_undecoded(
    established: Callable[..., Pair], plain: bool
) -> None:
    client, server = established(allow_plain=plain, client_raw_results=True)
    body = FunctionBody(DIGEST, "f", ("def f(x):\n    return x\n",))
    server.send(body)
    server.send(JobBatch((Job(1, DIGEST, b"args"),)))
    server.send(ResultBatch(BATCHES["mixed"]))
    server.send(Heartbeat())
    events = client.receive_data(server.data_to_send())
    assert [type(e) for e in events] == [FunctionBody, JobBatch, RawResults, Heartbeat]
    raw = events[2]
    assert isinstance(raw, RawResults)
    assert raw.results() == BATCHES["mixed"]


def test_a_connection_decodes_result_frames_by_default(established: Callable[..., Pair]) -> None:
    client, server = established()
    server.send(ResultBatch(BATCHES["one"]))
    assert client.receive_data(server.data_to_send()) == [ResultBatch(BATCHES["one"])]


def test_small_fields_are_cut_from_the_bytes_behind_a_whole_view() -> None:
    data = b"x" * 100
    assert Reader(memoryview(data), "t").whole_bytes() is data


def test_small_fields_of_a_slice_come_from_one_copy_of_it() -> None:
    data = b"abcdef" * 10
    assert Reader(memoryview(data)[6:12], "t").whole_bytes() == b"abcdef"


def test_a_large_body_in_a_buffer_is_never_copied_whole() -> None:
    assert Reader(memoryview(bytearray(len(BIG) + 10)), "t").whole_bytes() is None


def test_jobs_of_a_large_body_in_a_buffer_are_bytes_when_small_and_views_when_large() -> None:
    body = bytearray(b"".join(encode_message(JobBatch((Job(1, DIGEST, b"small"), Job(2, DIGEST, BIG))))))
    decoded_batch = decode_message(JobBatch.TYPE, memoryview(body))
    assert isinstance(decoded_batch, JobBatch)
    small, large = decoded_batch.jobs
    assert type(small.args) is bytes and small.args == b"small"
    assert isinstance(large.args, memoryview) and large.args.obj is body and large.args == BIG


def test_value_starts_with_looks_at_one_results_value_only() -> None:
    mapped = Result(8, True, b"\xffPBM" + bytes(40), "", 0.0, 0.0)
    short = Result(9, True, b"\xff", "PBM", 0.0, 0.0)  # the output after it must not count as its value
    empty = Result(10, True, b"", "", 0.0, 0.0)
    raw = decode_raw_results(memoryview(body_of((OK, FAILED, mapped, short, empty))))
    assert [raw.value_starts_with(i, b"\xffPBM") for i in range(5)] == [False, False, True, False, False]
