"""Buffered pickles (version 2): the layout, its golden vectors, the refusal on version 1, bad input."""

from __future__ import annotations

import importlib.util
import json
import pickle
import re
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ppft_protocol import (
    Connection,
    DecodeError,
    Job,
    JobBatch,
    Pickled,
    Result,
    ResultBatch,
    channel,
    is_pickled,
    split_pickled,
)
from ppft_protocol.messages import decode_message, encode_message


def _read_in_place(conn: Connection, data: bytes, chunk: int) -> list[object]:
    """Feed `data` as an owner reading `chunk` bytes at a time into `receive_buffer()` when offered."""
    events: list[object] = []
    off = 0
    while off < len(data):
        view = conn.receive_buffer()
        if view is None:
            events += conn.receive_data(data[off : off + chunk])
            off += chunk
            continue
        n = min(chunk, len(view), len(data) - off)
        view[:n] = data[off : off + n]
        view.release()
        events += conn.receive_into(n)
        off += n
    return events


VECTORS = Path(__file__).with_name("vectors")
DIGEST = bytes(range(32))


def _generator():  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location("ppft_make_vectors_b", VECTORS / "make_vectors.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _big_pickled() -> tuple[object, Pickled]:
    buffers: list[pickle.PickleBuffer] = []
    obj = (pickle.PickleBuffer(bytearray(b"a" * 100_000)), "small", pickle.PickleBuffer(b"b" * 70_000))
    data = pickle.dumps(obj, 5, buffer_callback=buffers.append)
    return obj, Pickled(data, [b.raw() for b in buffers])


def test_golden_vectors_are_what_the_code_writes() -> None:
    gen = _generator()
    assert gen.render_buffers() == (VECTORS / "buffers-v2.json").read_text(encoding="utf-8")


def test_golden_vector_field_splits_into_its_pickle_and_buffers() -> None:
    doc = json.loads((VECTORS / "buffers-v2.json").read_text(encoding="utf-8"))
    for entry in doc["messages"]:
        data, buffers = split_pickled(bytes.fromhex(entry["field"]))
        assert bytes(data).hex() == entry["buffered_field"]["pickle"]
        assert [bytes(b).hex() for b in buffers] == entry["buffered_field"]["buffers"]
        loaded = pickle.loads(data, buffers=buffers)
        assert [bytes(b) for b in loaded] == [b"abcd", b"xyz"]


def test_job_args_travel_as_parts_and_arrive_as_views_of_the_frame() -> None:
    _, pickled = _big_pickled()
    parts = encode_message(JobBatch((Job(7, DIGEST, pickled, 5), Job(8, DIGEST, b"plain", 5))), 2)
    assert any(part is pickled.buffers[0] for part in parts)  # written from the object's memory, uncopied
    frame = bytearray(b"".join(parts))
    message = decode_message(JobBatch.TYPE, memoryview(frame), 2)
    assert isinstance(message, JobBatch)
    args = message.jobs[0].args
    assert isinstance(args, memoryview) and args.obj is frame and is_pickled(args)
    assert message.jobs[1].args == b"plain" and not is_pickled(message.jobs[1].args)
    data, buffers = split_pickled(args)
    assert all(b.obj is frame for b in buffers)
    first, small, second = pickle.loads(data, buffers=buffers)
    assert bytes(first) == b"a" * 100_000 and small == "small" and bytes(second) == b"b" * 70_000


def test_result_values_travel_as_parts() -> None:
    _, pickled = _big_pickled()
    batch = ResultBatch((Result(1, True, pickled, "out\n", 0.5, 0.25, stderr_spans=((0, 4),)),))
    message = decode_message(ResultBatch.TYPE, memoryview(b"".join(encode_message(batch, 2))), 2)
    assert isinstance(message, ResultBatch)
    result = message.results[0]
    assert bytes(result.value) == b"".join(bytes(p) for p in pickled.parts())
    assert result.output == "out\n" and result.stderr_spans == ((0, 4),)


def test_version_1_never_gets_a_buffered_pickle() -> None:
    _, pickled = _big_pickled()
    with pytest.raises(ValueError, match="need protocol version 2"):
        encode_message(JobBatch((Job(7, DIGEST, pickled, 5),)), 1)
    with pytest.raises(ValueError, match="needs protocol version 2"):
        encode_message(ResultBatch((Result(1, True, pickled),)), 1)
    # plain jobs on version 1: exactly version 1's bytes, as before
    plain = JobBatch((Job(7, DIGEST, b"args", 5),))
    assert encode_message(plain, 1) == encode_message(plain, 2)


def test_a_field_that_is_no_buffered_pickle_is_refused_clearly() -> None:
    _, pickled = _big_pickled()
    field = b"".join(bytes(p) for p in pickled.parts())
    with pytest.raises(DecodeError, match=r"need .* bytes, the field has"):
        split_pickled(field[:-1])
    with pytest.raises(DecodeError, match="magic"):
        split_pickled(b"\x80\x05" + field[2:])
    with pytest.raises(DecodeError, match="header"):
        split_pickled(b"\xffPB5")
    with pytest.raises(DecodeError, match="0 buffers"):
        split_pickled(b"\xffPB5" + bytes(12))
    with pytest.raises(ValueError, match="at least one"):
        Pickled(b"x", [])


@given(st.binary(max_size=200))
def test_split_never_fails_but_with_decode_error(junk: bytes) -> None:
    try:
        split_pickled(b"\xffPB5" + junk)
    except DecodeError:
        pass


@pytest.mark.parametrize("aes_gcm", [False, True], ids=["chacha20", "aes-gcm"])
@pytest.mark.parametrize("in_place", [True, False], ids=["in-place", "copying"])
def test_a_sealed_buffered_frame_is_sealed_and_opened_in_place(
    monkeypatch: pytest.MonkeyPatch,
    in_place: bool,
    established: Callable[..., tuple[Connection, Connection]],
    aes_gcm: bool,
) -> None:
    """In place where this cryptography allows it; "copying": as with cryptography 51, which refuses
    overlapping buffers, or a release without `encrypt_into` (the frames must be the same)."""
    monkeypatch.setattr(channel, "_in_place", [in_place and channel._in_place[0]])
    client, server = established(aes_gcm=aes_gcm)
    assert client.sealed
    obj, pickled = _big_pickled()
    client.send(JobBatch((Job(1, DIGEST, pickled, 5),)))
    parts = client.data_to_send_parts()
    assert (
        max(len(part) for part in parts) >= 170_000
    )  # one sealed part: the frame sealed where it was copied
    events = _read_in_place(server, b"".join(bytes(p) for p in parts), 65536)
    (batch,) = events
    assert isinstance(batch, JobBatch)
    args = batch.jobs[0].args
    if channel._in_place[0]:  # a cryptography that opens where the frame lies (before 51)
        assert isinstance(args, memoryview) and not args.readonly  # a view of the buffer it was opened in
    data, buffers = split_pickled(args)
    first, small, second = pickle.loads(data, buffers=buffers)
    assert bytes(first) == b"a" * 100_000 and small == "small" and bytes(second) == b"b" * 70_000
    # the next frames still open (the counter moved on exactly once)
    client.send(JobBatch((Job(2, DIGEST, b"tiny", 5),)))
    (batch,) = server.receive_data(client.data_to_send())
    assert isinstance(batch, JobBatch) and batch.jobs[0].args == b"tiny"
    del obj


def test_the_spec_quotes_the_golden_frames() -> None:
    doc = Path(__file__).resolve().parents[3] / "docs" / "protocol.md"
    if not doc.exists():
        pytest.skip("docs/protocol.md is not part of this checkout (an sdist of the package alone)")
    text = re.sub(r"[^0-9a-f]", "", doc.read_text(encoding="utf-8"))
    for entry in json.loads((VECTORS / "buffers-v2.json").read_text(encoding="utf-8"))["messages"]:
        assert entry["frame"] in text


def test_a_relay_tells_buffered_values_and_keeps_them_from_version_1() -> None:
    from ppft_protocol.relay import decode_raw_results

    _, pickled = _big_pickled()
    batch = ResultBatch((Result(1, True, b"\x80\x05K\x03."), Result(2, True, pickled)))
    raw = decode_raw_results(memoryview(b"".join(encode_message(batch, 2))))
    assert raw.buffered
    records = raw.forward((11, 12))
    assert records.buffered
    assert [r.job_id for r in records.results()] == [11, 12]
    assert encode_message(records, 2)  # to version 2: as it came
    with pytest.raises(ValueError, match="pass them on as plain pickles"):
        encode_message(records, 1)
    plain = decode_raw_results(memoryview(b"".join(encode_message(ResultBatch(batch.results[:1]), 2))))
    assert not plain.buffered and encode_message(plain.forward((5,)), 1)
