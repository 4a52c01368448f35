"""Version 2's direct worker links (docs/protocol.md, "Version 2"): `Attach` (0x24), `Attached` (0x36) and
`EndDirect` (0x25); what a version-1 connection does with them; the golden vectors of direct-v2.json."""

from __future__ import annotations

import importlib.util
import json
import struct
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from ppft_protocol import Attach, Attached, Connection, DecodeError, EndDirect
from ppft_protocol.framing import encode_frame_header
from ppft_protocol.messages import decode_message, encode_message

VECTORS_DIR = Path(__file__).with_name("vectors")
VECTORS: dict[str, Any] = json.loads((VECTORS_DIR / "direct-v2.json").read_text(encoding="utf-8"))


def _frame(message: Any) -> bytes:
    body = b"".join(bytes(part) for part in encode_message(message, 2))
    return encode_frame_header(message.TYPE, len(body)) + body


def test_direct_vectors_file_is_exactly_what_the_implementation_produces() -> None:
    spec = importlib.util.spec_from_file_location("ppft_make_vectors_direct", VECTORS_DIR / "make_vectors.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.render_direct() == (VECTORS_DIR / "direct-v2.json").read_text(encoding="utf-8")


@pytest.mark.parametrize("entry", VECTORS["messages"], ids=lambda entry: entry["name"])
def test_each_vector_decodes_to_its_fields_and_back(entry: dict[str, Any]) -> None:
    frame = bytes.fromhex(entry["frame"])
    message = decode_message(frame[4], memoryview(frame[5:]))
    fields = {name: getattr(message, name) for name in type(message).__match_args__}
    assert json.loads(json.dumps(fields)) == entry["fields"]
    assert _frame(message) == frame


def test_the_documented_bytes() -> None:
    assert _frame(Attach()) == struct.pack(">IB", 0, 0x24)
    assert _frame(Attached(5)) == struct.pack(">IBQ", 8, 0x36, 5)
    assert _frame(EndDirect((7, 9))) == struct.pack(">IBIQQ", 20, 0x25, 2, 7, 9)


def test_they_travel_in_version_2(established: Callable[..., tuple[Connection, Connection]]) -> None:
    client, server = established()
    assert client.version == 2
    client.send(Attach())
    client.send(EndDirect((3, 4)))
    server.send(Attached(2**64 - 1))
    assert server.receive_data(client.data_to_send()) == [Attach(), EndDirect((3, 4))]
    assert client.receive_data(server.data_to_send()) == [Attached(2**64 - 1)]


@pytest.mark.parametrize("message", [Attach(), Attached(1), EndDirect((1,))], ids=lambda m: type(m).__name__)
def test_version_1_has_none_of_them(message: Any) -> None:
    with pytest.raises(ValueError, match="from protocol version 2 on"):
        encode_message(message, 1)
    body = b"".join(bytes(part) for part in encode_message(message, 2))
    with pytest.raises(DecodeError, match="exists from protocol version 2 on"):
        decode_message(message.TYPE, memoryview(body), 1)


def test_an_id_count_past_the_frame_is_a_decode_error() -> None:
    with pytest.raises(DecodeError, match="needs"):
        decode_message(EndDirect.TYPE, memoryview(struct.pack(">I", 3) + b"\0" * 16))


def test_the_spec_quotes_the_golden_frames() -> None:
    doc = Path(__file__).resolve().parents[3] / "docs" / "protocol.md"
    if not doc.exists():
        pytest.skip("docs/protocol.md is not part of this checkout (an sdist of the package alone)")
    text = doc.read_text(encoding="utf-8")
    section = text[text.index("### Direct worker links (`Attach`") :]
    for entry in VECTORS["messages"]:
        assert entry["frame"] in section, entry["name"]
