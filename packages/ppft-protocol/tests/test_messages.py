"""The message schema: every message type survives encode -> decode unchanged, large opaque fields come back
as views of the frame (no copy), and every malformed body is refused with a `DecodeError`."""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Callable

import pytest

from ppft_protocol import (
    Attach,
    Attached,
    Auth,
    AuthFailed,
    AuthOk,
    Bye,
    Cancel,
    Connection,
    DecodeError,
    EndDirect,
    FunctionBody,
    Heartbeat,
    Hello,
    Job,
    JobBatch,
    JobLimits,
    LiveOutput,
    LocalProtocolError,
    Message,
    NodeInfo,
    Put,
    PutRefused,
    Release,
    Result,
    ResultBatch,
    StatsReply,
    StatsRequest,
    Terminate,
    WatchOutput,
)
from ppft_protocol.messages import MESSAGE_TYPES, decode_message, encode_message

DIGEST = hashlib.sha256(b"def f(x):\n    return x + 1\n").digest()
BIG = bytes(range(256)) * 1024  # 256 KiB: over the 64 KiB line where opaque fields become views

SAMPLES: list[Message] = [
    Hello(bytes(range(32)), 0),
    Hello(bytes(range(32, 64)), Hello.FLAG_ALLOW_PLAIN),
    Auth(bytes(range(100, 132))),
    AuthOk(bytes(range(200, 232))),
    AuthFailed(),
    AuthFailed("go away"),
    NodeInfo("server", 8, "2.0.0", "node-1.example.org:60000"),
    NodeInfo("worker", 0, "", "h\u00f4te-\u00e9t\u00e9"),
    FunctionBody(DIGEST, "f", ("def g(x):\n    return x\n", "def f(x):\n    return g(x) + 1\n"), ("math",)),
    FunctionBody(DIGEST, "<lambda>", (), ("from os import path", "import numpy as np"), b"\x80\x05pickled"),
    FunctionBody(DIGEST, "", (), (), BIG),
    JobBatch(()),
    JobBatch((Job(1, DIGEST, b"\x80\x05K\x01\x85\x94.", 5),)),
    JobBatch(tuple(Job(i, DIGEST, b"\x80\x04K\x02\x85\x94.", 4) for i in range(2**40, 2**40 + 256))),
    JobBatch((Job(7, DIGEST, memoryview(BIG)), Job(2**64 - 1, DIGEST, b"", 0))),
    ResultBatch(()),
    ResultBatch((Result(1, True, b"\x80\x05K\x02.", "hello\n", 0.25, 0.125),)),
    ResultBatch(
        (
            Result(2, True, memoryview(BIG), "", 1.5, 1.0),
            Result(
                3,
                False,
                b"",
                "partial output \u2603 \udc80\n",
                0.5,
                0.5,
                "builtins.ZeroDivisionError",
                "division by zero",
                'Traceback (most recent call last):\n  File "<job>", line 1\nZeroDivisionError\n',
                b"\x80\x05pickled-exception",
            ),
            Result(4, False, b"", "", 0.0, 0.0, "module.Unpicklable", "no pickle", "tb", b""),
        )
    ),
    ResultBatch(
        (
            Result(
                5,
                True,
                b"\x80\x05N.",
                "out\nerr\nout \u2603\nerr\n",
                0.5,
                0.5,
                stderr_spans=((4, 8), (16, 20)),
            ),
            Result(6, False, b"", "err\n", 0.0, 0.0, "E", "m", "tb", b"", ((0, 4),)),
        )
    ),
    LiveOutput(()),
    LiveOutput(((3, 1, 0, "step 1\n"), (2**64 - 1, 2, 2**40, "warn \u2603\n"), (3, 1, 7, ""))),
    WatchOutput(True),
    WatchOutput(False),
    JobLimits(((1, 0.5), (2**64 - 1, 86400.0))),
    JobLimits(()),
    Terminate((1, 2**64 - 1)),
    Put(1, b"\x80\x05K*."),
    Put(2**64 - 1, memoryview(BIG)),
    Release(()),
    Release((1, 2**64 - 1)),
    PutRefused(3, "short of memory \u2603"),
    Attach(),
    Attached(2**64 - 1),
    EndDirect(()),
    EndDirect((1, 2**64 - 1)),
    Cancel(()),
    Cancel((1, 2, 3, 2**64 - 1)),
    StatsRequest(),
    StatsReply(123456789, 3.5, 16, 2),
    Heartbeat(),
    Bye(),
    Bye("server shutting down"),
]


def _frame_body(message: Message) -> bytes:
    return b"".join(encode_message(message))


def _id(message: Message) -> str:
    return type(message).__name__


@pytest.mark.parametrize("message", SAMPLES, ids=_id)
def test_message_round_trips_unchanged(message: Message) -> None:
    decoded = decode_message(message.TYPE, memoryview(_frame_body(message)))
    assert type(decoded) is type(message)
    assert decoded == message


@pytest.mark.parametrize("message", SAMPLES, ids=_id)
def test_reencoding_a_decoded_message_gives_the_same_bytes(message: Message) -> None:
    body = _frame_body(message)
    assert _frame_body(decode_message(message.TYPE, memoryview(body))) == body


LATER = {type(m): m for m in reversed(SAMPLES) if type(m).SINCE > 1}
"""A sample of every message type that a later protocol version added (the first in SAMPLES)."""


@pytest.mark.parametrize("message", list(LATER.values()), ids=lambda m: type(m).__name__)
def test_a_version_1_connection_neither_sends_nor_accepts_a_later_message(
    established: Callable[..., tuple[Connection, Connection]], message: Message
) -> None:
    old, new = established(client_versions=(1, 1))
    assert old.version == new.version == 1
    with pytest.raises(LocalProtocolError, match="exists from protocol version 2 on"):
        new.send(message)
    body = _frame_body(message)
    frame = struct.pack(">IB", len(body), message.TYPE) + body
    plain_old, _ = established(client_versions=(1, 1), allow_plain=True)
    with pytest.raises(DecodeError, match=f"0x{message.TYPE:02x} .*version 2 on.*speaks version 1"):
        plain_old.receive_data(frame)


def test_samples_cover_every_message_type() -> None:
    assert {m.TYPE for m in SAMPLES} == set(MESSAGE_TYPES)


def test_message_type_bytes_are_the_documented_ones() -> None:
    names = {t: cls.__name__ for t, cls in MESSAGE_TYPES.items()}
    assert names == {
        0x01: "Hello",
        0x02: "Auth",
        0x03: "AuthOk",
        0x04: "AuthFailed",
        0x10: "NodeInfo",
        0x20: "FunctionBody",
        0x21: "JobBatch",
        0x22: "Put",
        0x23: "Release",
        0x24: "Attach",
        0x25: "EndDirect",
        0x30: "ResultBatch",
        0x31: "LiveOutput",
        0x32: "WatchOutput",
        0x33: "JobLimits",
        0x34: "Terminate",
        0x35: "PutRefused",
        0x36: "Attached",
        0x40: "Cancel",
        0x50: "StatsRequest",
        0x51: "StatsReply",
        0x60: "Heartbeat",
        0x70: "Bye",
    }


def test_large_job_args_are_a_view_of_the_frame_not_a_copy() -> None:
    frame = _frame_body(JobBatch((Job(1, DIGEST, BIG),)))
    decoded = decode_message(JobBatch.TYPE, memoryview(frame))
    assert isinstance(decoded, JobBatch)
    args = decoded.jobs[0].args
    assert isinstance(args, memoryview)
    assert args.obj is frame
    assert args == BIG


def test_large_result_value_and_exception_are_views_of_the_frame() -> None:
    res = Result(1, False, BIG, "", 0.0, 0.0, "E", "m", "tb", BIG[:70000])
    frame = _frame_body(ResultBatch((res,)))
    decoded = decode_message(ResultBatch.TYPE, memoryview(frame))
    assert isinstance(decoded, ResultBatch)
    value, exception = decoded.results[0].value, decoded.results[0].exception
    assert isinstance(value, memoryview) and value.obj is frame
    assert isinstance(exception, memoryview) and exception.obj is frame
    assert value == BIG
    assert exception == BIG[:70000]


def test_small_opaque_fields_are_bytes() -> None:
    decoded = decode_message(JobBatch.TYPE, memoryview(_frame_body(JobBatch((Job(1, DIGEST, b"x" * 100),)))))
    assert isinstance(decoded, JobBatch)
    assert type(decoded.jobs[0].args) is bytes


def test_large_blob_is_encoded_without_joining_it() -> None:
    parts = encode_message(JobBatch((Job(1, DIGEST, memoryview(BIG)),)))
    assert any(isinstance(p, memoryview) and p.obj is BIG for p in parts)


def test_job_batch_layout_is_count_then_fixed_header_then_args() -> None:
    body = _frame_body(JobBatch((Job(0x0102030405060708, DIGEST, b"ARGS", 5),)))
    assert body == struct.pack(">I", 1) + struct.pack(">Q", 0x0102030405060708) + DIGEST + b"\x05" + (
        struct.pack(">I", 4) + b"ARGS"
    )


def test_ok_result_layout_carries_no_error_fields() -> None:
    body = _frame_body(ResultBatch((Result(9, True, b"V", "out", 1.0, 2.0),)))
    assert body == struct.pack(">IQBddII", 1, 9, 1, 1.0, 2.0, 1, 3) + b"V" + b"out"


@pytest.mark.parametrize("message", [m for m in SAMPLES if _frame_body(m)], ids=_id)
def test_every_truncation_of_a_body_is_a_decode_error(message: Message) -> None:
    body = _frame_body(message)
    cuts = range(len(body)) if len(body) < 2000 else [*range(64), len(body) // 2, len(body) - 1]
    for cut in cuts:
        with pytest.raises(DecodeError):
            decode_message(message.TYPE, memoryview(body[:cut]))


@pytest.mark.parametrize("message", SAMPLES, ids=_id)
def test_trailing_bytes_after_a_body_are_a_decode_error(message: Message) -> None:
    with pytest.raises(DecodeError, match="trailing"):
        decode_message(message.TYPE, memoryview(_frame_body(message) + b"\x00"))


@pytest.mark.parametrize("frame_type", [0x00, 0x05, 0x26, 0x7F, 0xFF])
def test_unknown_frame_type_is_a_decode_error(frame_type: int) -> None:
    with pytest.raises(DecodeError, match=f"0x{frame_type:02x}"):
        decode_message(frame_type, memoryview(b""))


def test_invalid_utf8_in_a_text_field_is_a_decode_error() -> None:
    body = struct.pack(">I", 2) + b"\xff\xfe"
    with pytest.raises(DecodeError, match="UTF-8"):
        decode_message(Bye.TYPE, memoryview(body))


def test_invalid_utf8_in_result_output_is_a_decode_error() -> None:
    body = struct.pack(">IQBddII", 1, 9, 1, 0.0, 0.0, 0, 1) + b"\xc3"
    with pytest.raises(DecodeError, match="output"):
        decode_message(ResultBatch.TYPE, memoryview(body))


@pytest.mark.parametrize("status", [4, 5, 0x80, 0xFF])
def test_unknown_result_status_is_a_decode_error(status: int) -> None:
    body = struct.pack(">IQBddII", 1, 9, status, 0.0, 0.0, 0, 0)
    with pytest.raises(DecodeError, match="status"):
        decode_message(ResultBatch.TYPE, memoryview(body))


def test_the_stderr_status_bit_is_unknown_to_version_1() -> None:
    body = struct.pack(">IQBddII", 1, 9, 3, 0.0, 0.0, 0, 1) + b"x" + struct.pack(">III", 1, 0, 1)
    assert decode_message(ResultBatch.TYPE, memoryview(body)).results[0].stderr_spans == ((0, 1),)
    with pytest.raises(DecodeError, match="status 3, whose stderr bit exists only in protocol version 2"):
        decode_message(ResultBatch.TYPE, memoryview(body), 1)


def test_job_count_larger_than_the_frame_is_refused_before_parsing() -> None:
    with pytest.raises(DecodeError, match="cannot fit"):
        decode_message(JobBatch.TYPE, memoryview(struct.pack(">I", 0xFFFFFFFF) + bytes(45)))


def test_result_count_larger_than_the_frame_is_refused_before_parsing() -> None:
    with pytest.raises(DecodeError, match="cannot fit"):
        decode_message(ResultBatch.TYPE, memoryview(struct.pack(">I", 1000) + bytes(33)))


def test_string_list_count_larger_than_the_frame_is_refused() -> None:
    body = DIGEST + struct.pack(">I", 1) + b"f" + struct.pack(">I", 0xFFFFFFFF)
    with pytest.raises(DecodeError, match="sources"):
        decode_message(FunctionBody.TYPE, memoryview(body))


def test_cancel_count_larger_than_the_frame_is_refused() -> None:
    with pytest.raises(DecodeError, match="job_ids"):
        decode_message(Cancel.TYPE, memoryview(struct.pack(">I", 0x20000000) + bytes(8)))


def test_job_with_a_short_digest_cannot_be_encoded() -> None:
    with pytest.raises(ValueError, match="digest must be 32 bytes"):
        encode_message(JobBatch((Job(1, b"short", b""),)))
