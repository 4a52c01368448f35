"""Version 2's objects shipped once (docs/protocol.md, "Version 2"): `Put` (0x22), `Release` (0x23) and
`PutRefused` (0x35); what a version-1 connection does with them; the golden vectors of refs-v2.json."""

from __future__ import annotations

import importlib.util
import json
import struct
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from ppft_protocol import Connection, DecodeError, Put, PutRefused, Release
from ppft_protocol.framing import encode_frame_header
from ppft_protocol.messages import decode_message, encode_message

Pair = tuple[Connection, Connection]
VECTORS_DIR = Path(__file__).with_name("vectors")
VECTORS: dict[str, Any] = json.loads((VECTORS_DIR / "refs-v2.json").read_text(encoding="utf-8"))


def _body(message: object, version: int = 2) -> bytes:
    return b"".join(bytes(p) for p in encode_message(message, version))  # type: ignore[arg-type]


def _fields(message: object) -> dict[str, Any]:
    fields = {}
    for name in type(message).__match_args__:  # type: ignore[attr-defined]
        value = getattr(message, name)
        fields[name] = {"hex": bytes(value).hex()} if isinstance(value, (bytes, memoryview)) else value
    return json.loads(json.dumps(fields))  # type: ignore[no-any-return]


def test_refs_vectors_file_is_exactly_what_the_implementation_produces() -> None:
    spec = importlib.util.spec_from_file_location("ppft_make_vectors_refs", VECTORS_DIR / "make_vectors.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.render_refs() == (VECTORS_DIR / "refs-v2.json").read_text(encoding="utf-8")


@pytest.mark.parametrize("entry", VECTORS["messages"], ids=lambda entry: entry["name"])
def test_each_vector_decodes_to_its_fields_and_encodes_to_its_bytes(entry: dict[str, Any]) -> None:
    frame = bytes.fromhex(entry["frame"])
    kind = frame[4]
    message = decode_message(kind, memoryview(frame[5:]))
    assert _fields(message) == entry["fields"]
    body = _body(message)
    assert encode_frame_header(kind, len(body)) + body == frame


def test_the_documented_bytes() -> None:
    assert _body(Put(5, b"ab")) == struct.pack(">QI", 5, 2) + b"ab"
    assert _body(Release((7, 9))) == struct.pack(">IQQ", 2, 7, 9)
    assert _body(PutRefused(7, "no")) == struct.pack(">QI", 7, 2) + b"no"
    assert (Put.TYPE, Release.TYPE, PutRefused.TYPE) == (0x22, 0x23, 0x35)


def test_they_travel_in_version_2(established: Callable[..., Pair]) -> None:
    client, server = established()
    assert client.version == 2
    client.send(Put(3, b"\x80\x05K*."))
    client.send(Release((3,)))
    server.send(PutRefused(4, "short of memory"))
    assert server.receive_data(client.data_to_send()) == [Put(3, b"\x80\x05K*."), Release((3,))]
    assert client.receive_data(server.data_to_send()) == [PutRefused(4, "short of memory")]


def test_a_release_count_past_the_frame_is_a_decode_error() -> None:
    with pytest.raises(DecodeError, match="needs"):
        decode_message(Release.TYPE, memoryview(struct.pack(">I", 1000) + b"\0" * 16))


def test_the_spec_quotes_the_golden_frames() -> None:
    doc = Path(__file__).resolve().parents[3] / "docs" / "protocol.md"
    if not doc.exists():
        pytest.skip("docs/protocol.md is not part of this checkout (an sdist of the package alone)")
    text = doc.read_text(encoding="utf-8")
    section = text[text.index("### Objects shipped once (`Put`") :]
    for entry in VECTORS["messages"]:
        assert entry["frame"] in section, entry["name"]
