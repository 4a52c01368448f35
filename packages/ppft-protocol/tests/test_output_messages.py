"""Version 2's output changes (docs/protocol.md, "Version 2"): stderr spans in results, `LiveOutput` and
`WatchOutput`; what a version-1 connection does with them; the golden vectors of output-v2.json."""

from __future__ import annotations

import importlib.util
import json
import struct
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from ppft_protocol import (
    Connection,
    DecodeError,
    LiveOutput,
    RemoteProtocolError,
    Result,
    ResultBatch,
    WatchOutput,
)
from ppft_protocol.batches import ForwardedResults
from ppft_protocol.messages import decode_message, encode_message
from ppft_protocol.relay import RawResults, decode_raw_results

Pair = tuple[Connection, Connection]
VECTORS_DIR = Path(__file__).with_name("vectors")
DOC = Path(__file__).resolve().parents[3] / "docs" / "protocol.md"

TEXT = "start\nwarn \u2603\nend\n"  # "warn ☃\n" went to stderr: bytes 6..15 of the UTF-8
MIXED = Result(1, True, b"\x80\x05N.", TEXT, 0.5, 0.25, "", "", "", b"", ((6, 15),))
FAILED = Result(2, False, b"", "oops\n", 0.0, 0.0, "builtins.ValueError", "bad", "tb\n", b"", ((0, 5),))


def _body(message: object, version: int = 2) -> bytes:
    return b"".join(bytes(p) for p in encode_message(message, version))  # type: ignore[arg-type]


def _load_generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("ppft_make_vectors_output", VECTORS_DIR / "make_vectors.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# -- stderr spans ---------------------------------------------------------------------------------------


def test_stderr_spans_travel_in_version_2() -> None:
    decoded = decode_message(ResultBatch.TYPE, memoryview(_body(ResultBatch((MIXED, FAILED)))))
    assert decoded == ResultBatch((MIXED, FAILED))


def test_a_result_without_stderr_is_the_same_bytes_in_both_versions() -> None:
    plain = ResultBatch((MIXED._replace(stderr_spans=()),))
    assert _body(plain, 2) == _body(plain, 1)


def test_version_1_carries_the_same_output_without_the_spans() -> None:
    for message in (ResultBatch((MIXED, FAILED)), ForwardedResults((7, 8), (MIXED, FAILED))):
        body = _body(message, 1)
        decoded = decode_message(ResultBatch.TYPE, memoryview(body), 1)
        assert isinstance(decoded, ResultBatch)
        assert [r.output for r in decoded.results] == [TEXT, "oops\n"]
        assert [r.stderr_spans for r in decoded.results] == [(), ()]
    assert _body(ResultBatch((MIXED, FAILED)), 1) == _body(
        ResultBatch((MIXED._replace(stderr_spans=()), FAILED._replace(stderr_spans=()))), 1
    )


def _spanned(spans: list[tuple[int, int]], output: bytes = b"ab\xe2\x98\x83cd") -> bytes:
    head = struct.pack(">IQBddII", 1, 9, 3, 0.0, 0.0, 0, len(output)) + output
    return head + struct.pack(">I", len(spans)) + b"".join(struct.pack(">II", *s) for s in spans)


@pytest.mark.parametrize(
    ("spans", "why"),
    [
        ([], "no stderr span"),
        ([(0, 0)], "not ascending, disjoint, non-empty"),
        ([(2, 1)], "not ascending"),
        ([(0, 8)], "within its output of 7 bytes"),
        ([(0, 2), (1, 5)], "disjoint"),
        ([(3, 5)], "cuts a UTF-8 character"),
        ([(0, 3)], "cuts a UTF-8 character"),
    ],
)
def test_bad_stderr_spans_are_a_decode_error(spans: list[tuple[int, int]], why: str) -> None:
    body = _spanned(spans)
    with pytest.raises(DecodeError, match=why):
        decode_message(ResultBatch.TYPE, memoryview(body))
    with pytest.raises(DecodeError, match=why):  # and the relay's decoder alike
        decode_raw_results(memoryview(body))


def test_good_spans_on_character_boundaries_decode() -> None:
    batch = decode_message(ResultBatch.TYPE, memoryview(_spanned([(0, 2), (5, 7)])))
    assert isinstance(batch, ResultBatch)
    result = batch.results[0]
    assert (result.output, result.stderr_spans) == ("ab\u2603cd", ((0, 2), (5, 7)))


def test_an_encoder_refuses_spans_outside_the_output() -> None:
    with pytest.raises(ValueError, match="not within an output of 4 bytes"):
        encode_message(ResultBatch((Result(1, True, b"", "abcd", stderr_spans=((2, 9),)),)))


# -- through connections: version 2, and a version-1 peer -----------------------------------------------


def test_a_relay_forwards_spans_to_a_version_2_peer_and_drops_them_for_a_version_1_peer(
    established: Callable[..., Pair],
) -> None:
    """A ppserver's workers speak version 2; its client may speak version 1 (ppft 2.0.0)."""
    worker_side, pool_side = established(server_raw_results=True)
    worker_side.send(ResultBatch((MIXED, FAILED)))
    (raw,) = pool_side.receive_data(worker_side.data_to_send())
    assert isinstance(raw, RawResults) and raw.streams
    for versions, spans in (((1, 2), ((6, 15),)), ((1, 1), ())):
        server, client = established(client_versions=versions)
        server.send(raw.forward([41, 42]))
        (batch,) = client.receive_data(server.data_to_send())
        assert isinstance(batch, ResultBatch)
        assert [r.job_id for r in batch.results] == [41, 42]
        assert [r.output for r in batch.results] == [TEXT, "oops\n"]
        assert batch.results[0].stderr_spans == spans
        server.send(raw.forward([43], [1]))
        (one,) = client.receive_data(server.data_to_send())
        assert one.results[0].job_id == 43  # type: ignore[attr-defined]


def test_a_raw_frame_without_spans_is_forwarded_as_is_to_a_version_1_peer(
    established: Callable[..., Pair],
) -> None:
    plain = ResultBatch((MIXED._replace(stderr_spans=()),))
    raw = decode_raw_results(memoryview(_body(plain)))
    assert not raw.streams
    assert _body(raw.forward([5]), 1) == _body(raw.forward([5]), 2)


def test_a_version_1_connection_refuses_a_result_with_the_stderr_bit(
    established: Callable[..., Pair],
) -> None:
    old, _ = established(client_versions=(1, 1), allow_plain=True)
    body = _body(ResultBatch((MIXED,)), 2)  # as a version-2 peer would, wrongly, send it
    with pytest.raises(RemoteProtocolError, match="stderr bit exists only in protocol version 2"):
        old.receive_data(struct.pack(">IB", len(body), ResultBatch.TYPE) + body)


def test_live_output_and_watch_output_travel_in_version_2(established: Callable[..., Pair]) -> None:
    client, server = established()
    assert client.version == 2
    client.send(WatchOutput(True))
    assert server.receive_data(client.data_to_send()) == [WatchOutput(True)]
    live = LiveOutput(((3, 1, 0, "step 1\n"), (3, 2, 7, "warn \u2603\n"), (4, 1, 2**40, "")))
    server.send(live)
    assert client.receive_data(server.data_to_send()) == [live]


@pytest.mark.parametrize(
    ("body", "why"),
    [
        (struct.pack(">IQBQ", 1, 3, 3, 0) + struct.pack(">I", 0), "unknown stream 3"),
        (struct.pack(">I", 1000), "cannot fit"),
        (struct.pack(">IQBQ", 1, 3, 1, 0) + struct.pack(">I", 5) + b"ab", "text"),
    ],
)
def test_malformed_live_output_is_a_decode_error(body: bytes, why: str) -> None:
    with pytest.raises(DecodeError, match=why):
        decode_message(LiveOutput.TYPE, memoryview(body))


def test_watch_output_takes_0_or_1_only() -> None:
    with pytest.raises(DecodeError, match="'on' must be 0 or 1"):
        decode_message(WatchOutput.TYPE, memoryview(b"\x02"))


def test_live_output_refuses_to_encode_an_unknown_stream() -> None:
    with pytest.raises(ValueError, match="stream must be 1"):
        encode_message(LiveOutput(((1, 0, 0, "x"),)))


# -- golden vectors -------------------------------------------------------------------------------------

GEN = _load_generator()
OUTPUT_VECTORS: dict[str, Any] = json.loads((VECTORS_DIR / "output-v2.json").read_text(encoding="utf-8"))


def test_output_vectors_file_is_exactly_what_the_implementation_produces() -> None:
    assert GEN.render_output() == (VECTORS_DIR / "output-v2.json").read_text(encoding="utf-8")


@pytest.mark.parametrize("vector", OUTPUT_VECTORS["messages"], ids=lambda v: v["name"])
def test_output_vector_decodes_in_its_version(vector: dict[str, Any]) -> None:
    frame = bytes.fromhex(vector["frame"])
    length, ftype = struct.unpack_from(">IB", frame)
    assert (ftype, length) == (vector["type"], len(frame) - 5)
    message = decode_message(ftype, memoryview(frame)[5:], vector["version"])
    assert type(message).__name__ == vector["message"]
    if vector["version"] >= 2:
        assert GEN.describe(message) == vector["fields"]
    else:  # the spans stay behind: every other field is the message's
        expected = vector["fields"]
        expected.pop("python", None)  # NodeInfo's python stays behind too
        for result in expected.get("results", ()):
            result.pop("stderr_spans", None)
        assert GEN.describe(message) == expected


def test_every_output_vector_frame_is_quoted_in_the_protocol_page() -> None:
    doc = "".join(DOC.read_text(encoding="utf-8").split())
    for vector in OUTPUT_VECTORS["messages"]:
        assert vector["frame"] in doc, vector["name"]
