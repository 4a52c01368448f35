"""Version 2's limits on jobs (docs/protocol.md, "Version 2"): `JobLimits` (0x33) and `Terminate` (0x34);
what a version-1 connection does with them; the golden vectors of limits-v2.json."""

from __future__ import annotations

import importlib.util
import json
import struct
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from ppft_protocol import Connection, DecodeError, JobLimits, Terminate
from ppft_protocol.framing import encode_frame_header
from ppft_protocol.messages import decode_message, encode_message

Pair = tuple[Connection, Connection]
VECTORS_DIR = Path(__file__).with_name("vectors")
VECTORS: dict[str, Any] = json.loads((VECTORS_DIR / "limits-v2.json").read_text(encoding="utf-8"))


def _body(message: object, version: int = 2) -> bytes:
    return b"".join(bytes(p) for p in encode_message(message, version))  # type: ignore[arg-type]


def test_limits_vectors_file_is_exactly_what_the_implementation_produces() -> None:
    spec = importlib.util.spec_from_file_location("ppft_make_vectors_limits", VECTORS_DIR / "make_vectors.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.render_limits() == (VECTORS_DIR / "limits-v2.json").read_text(encoding="utf-8")


@pytest.mark.parametrize("entry", VECTORS["messages"], ids=lambda entry: entry["name"])
def test_each_vector_decodes_to_its_fields_and_encodes_to_its_bytes(entry: dict[str, Any]) -> None:
    frame = bytes.fromhex(entry["frame"])
    kind = frame[4]
    message = decode_message(kind, memoryview(frame[5:]))
    fields = {name: json.loads(json.dumps(getattr(message, name))) for name in type(message).__match_args__}
    assert fields == entry["fields"]
    body = _body(message)
    assert encode_frame_header(kind, len(body)) + body == frame


def test_the_documented_bytes() -> None:
    assert _body(JobLimits(((7, 1.5),))) == struct.pack(">IQd", 1, 7, 1.5)
    assert _body(Terminate((7, 9))) == struct.pack(">IQQ", 2, 7, 9)
    assert (JobLimits.TYPE, Terminate.TYPE) == (0x33, 0x34)


def test_they_travel_in_version_2(established: Callable[..., Pair]) -> None:
    client, server = established()
    assert client.version == 2
    client.send(JobLimits(((3, 0.25), (4, 86400.0))))
    client.send(Terminate((3,)))
    assert server.receive_data(client.data_to_send()) == [
        JobLimits(((3, 0.25), (4, 86400.0))),
        Terminate((3,)),
    ]


@pytest.mark.parametrize("seconds", [0.0, -1.0, float("nan"), float("inf")])
def test_a_limit_that_is_not_positive_and_finite_is_refused_both_ways(seconds: float) -> None:
    with pytest.raises(ValueError, match="positive and finite"):
        encode_message(JobLimits(((1, seconds),)))
    with pytest.raises(DecodeError, match="time limit of"):
        decode_message(JobLimits.TYPE, memoryview(struct.pack(">IQd", 1, 1, seconds)))


@pytest.mark.parametrize("kind", [JobLimits.TYPE, Terminate.TYPE])
def test_a_count_past_the_frame_is_a_decode_error(kind: int) -> None:
    with pytest.raises(DecodeError, match="needs"):
        decode_message(kind, memoryview(struct.pack(">I", 1000) + b"\0" * 16))


def test_the_spec_quotes_the_golden_frames() -> None:
    doc = Path(__file__).resolve().parents[3] / "docs" / "protocol.md"
    if not doc.exists():
        pytest.skip("docs/protocol.md is not part of this checkout (an sdist of the package alone)")
    text = doc.read_text(encoding="utf-8")
    section = text[text.index("### Limits on jobs (`JobLimits`") :]
    for entry in VECTORS["messages"]:
        assert entry["frame"] in section, entry["name"]
