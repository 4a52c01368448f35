"""Golden vectors (tests/vectors/protocol-v1.json, protocol-v2.json): the implementation reproduces every
byte, fresh endpoints fed one side of a recorded transcript answer with exactly the other side, and the
keys, proofs and sealed frames follow from the formulas of docs/protocol.md computed independently with
`cryptography` and `hmac`."""

from __future__ import annotations

import hashlib
import hmac
import importlib.util
import json
import re
import struct
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM, ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from ppft_protocol import Connection, DowngradeError, Established, LegacyPeerError, Role
from ppft_protocol.connection import DOWNGRADE_REASON
from ppft_protocol.framing import parse_opening
from ppft_protocol.messages import MESSAGE_TYPES, decode_message

VECTORS_DIR = Path(__file__).with_name("vectors")
VECTORS_FILE = VECTORS_DIR / "protocol-v1.json"
VECTORS_FILE_V2 = VECTORS_DIR / "protocol-v2.json"
DOC = Path(__file__).resolve().parents[3] / "docs" / "protocol.md"


def _load_generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("ppft_make_vectors", VECTORS_DIR / "make_vectors.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


GEN = _load_generator()
VECTORS: dict[str, Any] = json.loads(VECTORS_FILE.read_text(encoding="utf-8"))
VECTORS_V2: dict[str, Any] = json.loads(VECTORS_FILE_V2.read_text(encoding="utf-8"))
FILES = {1: VECTORS, 2: VECTORS_V2}
INPUTS = VECTORS["inputs"]
SECRET = bytes.fromhex(INPUTS["secret"])
NONCE_C = bytes.fromhex(INPUTS["nonce_client"])
NONCE_S = bytes.fromhex(INPUTS["nonce_server"])
NAMES = ["handshake_sealed", "handshake_plain", "handshake_aes_gcm"]
HANDSHAKES = [(v, name) for v in FILES for name in NAMES]
"""(version of the file, name of the handshake vector in it)."""
SEALED_CIPHERS = {"handshake_sealed": ("", ChaCha20Poly1305), "handshake_aes_gcm": ("/aes-256-gcm", AESGCM)}
"""The sealed vectors: the suffix of their session keys' HKDF info, and their AEAD."""
SEALED = [(v, name) for v in FILES for name in SEALED_CIPHERS]


def _hs_id(value: tuple[int, str]) -> str:
    return f"v{value[0]}-{value[1]}"


def _hkdf(ikm: bytes, salt: bytes, info: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=salt, info=info).derive(ikm)


def _joined(pieces: list[dict[str, str]]) -> bytes:
    return b"".join(bytes.fromhex(p["hex"]) for p in pieces)


def _endpoint(role: Role, vector: dict[str, Any]) -> Connection:
    """A fresh endpoint of `vector`'s connection, with its fixed nonce, comment, offers and versions."""
    side = "client" if role is Role.CLIENT else "server"
    return Connection(
        role,
        SECRET,
        nonce=NONCE_C if role is Role.CLIENT else NONCE_S,
        comment=INPUTS[f"comment_{side}"],
        allow_plain=vector[f"allow_plain_{side}"],
        aes_gcm=vector.get(f"aes_gcm_{side}", False),
        versions=tuple(vector.get(f"versions_{side}", INPUTS[f"versions_{side}"])),  # type: ignore[arg-type]
    )


# -- the implementation reproduces the file ----------------------------------------------------------------


def test_vectors_file_is_exactly_what_the_implementation_produces() -> None:
    assert GEN.render() == VECTORS_FILE.read_text(encoding="utf-8")


def test_version_2_vectors_file_is_exactly_what_the_implementation_produces() -> None:
    assert GEN.render(2) == VECTORS_FILE_V2.read_text(encoding="utf-8")


def test_version_2_inputs_are_version_1s_but_the_ranges() -> None:
    inputs = dict(VECTORS_V2["inputs"])
    assert (inputs.pop("versions_client"), inputs.pop("versions_server")) == ([1, 2], [1, 2])
    assert {k: v for k, v in INPUTS.items() if not k.startswith("versions_")} == inputs


@pytest.mark.parametrize("vector", VECTORS["messages"], ids=lambda v: v["name"])
def test_message_vector_decodes_to_its_fields_and_encodes_back_to_its_bytes(vector: dict[str, Any]) -> None:
    frame = bytes.fromhex(vector["frame"])
    length, ftype = struct.unpack_from(">IB", frame)
    assert (ftype, length) == (vector["type"], len(frame) - 5)
    message = decode_message(ftype, memoryview(frame)[5:], 1)
    assert type(message).__name__ == vector["message"]
    assert GEN.describe(message) == vector["fields"]
    assert GEN._frame(message, 1) == frame


@pytest.mark.parametrize("vector", VECTORS_V2["messages"], ids=lambda v: v["name"])
def test_version_2_message_vectors_decode_to_their_fields_and_encode_back(vector: dict[str, Any]) -> None:
    frame = bytes.fromhex(vector["frame"])
    version = vector["version"]
    message = decode_message(vector["type"], memoryview(frame)[5:], version)
    fields = dict(vector["fields"])  # the message as sent; version 1 carries no page nor python
    if version == 1:
        fields.pop("page", None)
        fields.pop("python", None)
    assert GEN.describe(message) == fields
    assert GEN._frame(message, version) == frame
    if version == 1:  # the page is not carried: the frame is version 1's NodeInfo exactly
        v1 = next(v for v in VECTORS["messages"] if v["name"] == "node-info")
        assert vector["frame"] == v1["frame"]


def test_message_vectors_cover_every_message_type() -> None:
    assert {v["type"] for v in VECTORS["messages"]} == {
        t for t, cls in MESSAGE_TYPES.items() if cls.SINCE == 1
    }


def test_opening_vectors_parse_to_their_ranges() -> None:
    openings = VECTORS["openings"]
    client = parse_opening(bytes.fromhex(openings["client"])[8:])
    assert (client.min_version, client.max_version, client.comment) == (1, 1, INPUTS["comment_client"])
    wide = parse_opening(bytes.fromhex(openings["range-2-5"])[8:])
    assert (wide.min_version, wide.max_version) == (2, 5)
    with pytest.raises(LegacyPeerError):
        parse_opening(bytes.fromhex(openings["legacy-1.x-server-version-message"])[8:])


# -- transcripts: one side's bytes make a fresh endpoint say exactly the other side's -----------------------


@pytest.mark.parametrize("version, name", HANDSHAKES, ids=[_hs_id(x) for x in HANDSHAKES])
def test_fresh_server_fed_the_client_transcript_answers_with_the_server_transcript(
    version: int, name: str
) -> None:
    vector = FILES[version][name]
    server = _endpoint(Role.SERVER, vector)
    sent = server.data_to_send()
    events = []
    for piece in vector["client_to_server"]:
        events += server.receive_data(bytes.fromhex(piece["hex"]))
        sent += server.data_to_send()
    assert sent == _joined(vector["server_to_client"])
    assert events == [Established(version, vector["sealed"], INPUTS["comment_client"], vector.get("cipher"))]


@pytest.mark.parametrize("version, name", HANDSHAKES, ids=[_hs_id(x) for x in HANDSHAKES])
def test_fresh_client_fed_the_server_transcript_answers_with_the_client_transcript(
    version: int, name: str
) -> None:
    vector = FILES[version][name]
    client = _endpoint(Role.CLIENT, vector)
    sent = client.data_to_send()
    events = []
    for piece in vector["server_to_client"]:
        events += client.receive_data(bytes.fromhex(piece["hex"]))
        sent += client.data_to_send()
    assert sent == _joined(vector["client_to_server"])
    assert events == [Established(version, vector["sealed"], INPUTS["comment_server"], vector.get("cipher"))]


@pytest.mark.parametrize("version, name", HANDSHAKES, ids=[_hs_id(x) for x in HANDSHAKES])
def test_frames_after_the_handshake_decode_to_their_messages(version: int, name: str) -> None:
    vector = FILES[version][name]
    client = _endpoint(Role.CLIENT, vector)
    server = _endpoint(Role.SERVER, vector)
    server.receive_data(_joined(vector["client_to_server"]))
    client.receive_data(_joined(vector["server_to_client"]))
    for entry in vector["after_handshake"]:
        receiver = server if entry["direction"] == "client-to-server" else client
        (message, *_) = receiver.receive_data(bytes.fromhex(entry["frame"]))
        assert type(message).__name__ == entry["message"]
        assert GEN.describe(message) == entry["fields"]


def test_wrong_secret_vector_is_one_auth_failed_frame() -> None:
    refused = bytes.fromhex(VECTORS["handshake_wrong_secret"]["server_to_client_after_auth"])
    auth_failed = next(v for v in VECTORS["messages"] if v["name"] == "auth-failed")
    assert refused.hex() == auth_failed["frame"]


# -- the spec's formulas, computed independently ----------------------------------------------------------


def test_k_auth_is_hkdf_of_the_secret_with_the_documented_salt_and_info() -> None:
    expected = _hkdf(SECRET, b"ppft-protocol", b"auth")
    for version, name in HANDSHAKES:
        assert FILES[version][name]["k_auth"] == expected.hex()


@pytest.mark.parametrize("version, name", HANDSHAKES, ids=[_hs_id(x) for x in HANDSHAKES])
@pytest.mark.parametrize("role", ["client", "server"])
def test_proof_is_hmac_of_the_documented_transcript(version: int, name: str, role: str) -> None:
    vector = FILES[version][name]
    assert vector["version"] == version
    k_auth = bytes.fromhex(vector["k_auth"])
    openings = b""
    if version >= 2:  # both openings as they crossed the wire, the client's first
        sent = (vector["client_to_server"][0]["hex"], vector["server_to_client"][0]["hex"])
        quoted = (FILES[version]["openings"]["client"], FILES[version]["openings"]["server"])
        assert sent == quoted
        openings = bytes.fromhex("".join(sent))
    transcript = (
        b"ppft-auth/"
        + role.encode()
        + struct.pack(">H", vector["version"])
        + NONCE_C
        + NONCE_S
        + bytes([vector["flags_client"], vector["flags_server"]])
        + openings
    )
    expected = hmac.new(k_auth, transcript, hashlib.sha256).hexdigest()
    assert vector[f"proof_{role}"] == expected
    piece = "Auth" if role == "client" else "AuthOk"
    side = "client_to_server" if role == "client" else "server_to_client"
    (frame_hex,) = [p["hex"] for p in vector[side] if p["piece"] == piece]
    assert frame_hex == f"00000020{3 if piece == 'AuthOk' else 2:02x}{expected}"


@pytest.mark.parametrize("version, name", SEALED, ids=[_hs_id(x) for x in SEALED])
@pytest.mark.parametrize("direction", ["client-to-server", "server-to-client"])
def test_session_key_is_hkdf_of_the_secret_over_both_nonces(version: int, name: str, direction: str) -> None:
    vector = FILES[version][name]
    suffix, _ = SEALED_CIPHERS[name]
    info = b"ppft-seal/" + struct.pack(">H", version) + b"/" + direction.encode() + suffix.encode()
    expected = _hkdf(SECRET, NONCE_C + NONCE_S, info)
    assert vector[f"key_{direction.replace('-', '_')}"] == expected.hex()


@pytest.mark.parametrize("version, flags", [(1, 0x02), (2, 0x06)])
def test_aes_gcm_vector_is_negotiated_by_the_aes_gcm_flag_in_both_hellos(version: int, flags: int) -> None:
    vector = FILES[version]["handshake_aes_gcm"]
    assert (vector["flags_client"], vector["flags_server"], vector["cipher"]) == (flags, flags, "aes-256-gcm")
    for side in ("client_to_server", "server_to_client"):
        (hello,) = [p["hex"] for p in vector[side] if p["piece"] == "Hello"]
        assert hello.endswith(f"{flags:02x}")


@pytest.mark.parametrize("version", [1, 2])
def test_version_2_hellos_carry_the_downgrade_sentinel_and_version_1_hellos_do_not(version: int) -> None:
    for name in NAMES:
        vector = FILES[version][name]
        for side in ("client", "server"):
            assert bool(vector[f"flags_{side}"] & 0x04) is (version == 2)


def test_downgrade_vector_is_one_auth_failed_naming_the_downgrade() -> None:
    vector = VECTORS_V2["downgrade_to_version_1"]
    opening, hello = (bytes.fromhex(p["hex"]) for p in vector["client_to_server"])
    assert parse_opening(opening[8:]).max_version == 1
    refused = bytes.fromhex(vector["server_to_client_after_hello"])
    assert refused[4] == 0x04 and DOWNGRADE_REASON.encode() in refused
    server = _endpoint(Role.SERVER, VECTORS_V2["handshake_sealed"])
    server.data_to_send()
    with pytest.raises(DowngradeError):
        server.receive_data(opening + hello)
    assert server.data_to_send() == refused


@pytest.mark.parametrize("version, name", SEALED, ids=[_hs_id(x) for x in SEALED])
def test_sealed_frames_are_the_aead_with_counter_nonces_and_the_header_as_aad(
    version: int, name: str
) -> None:
    vector = FILES[version][name]
    _, aead = SEALED_CIPHERS[name]
    counters = {"client-to-server": 0, "server-to-client": 0}
    for entry in vector["after_handshake"]:
        direction = entry["direction"]
        key = bytes.fromhex(vector[f"key_{direction.replace('-', '_')}"])
        plaintext = bytes.fromhex(entry["plaintext_body"])
        ftype = MESSAGE_TYPES_BY_NAME[entry["message"]]
        header = struct.pack(">IB", len(plaintext) + 16, ftype)
        nonce = bytes(4) + struct.pack(">Q", counters[direction])
        counters[direction] += 1
        assert entry["nonce"] == nonce.hex()
        assert entry["aad"] == header.hex()
        expected = header + aead(key).encrypt(nonce, plaintext, header)
        assert entry["frame"] == expected.hex()


@pytest.mark.parametrize("version", [1, 2])
def test_plain_frames_after_the_handshake_are_the_bare_plaintext(version: int) -> None:
    for entry in FILES[version]["handshake_plain"]["after_handshake"]:
        plaintext = bytes.fromhex(entry["plaintext_body"])
        header = struct.pack(">IB", len(plaintext), MESSAGE_TYPES_BY_NAME[entry["message"]])
        assert entry["frame"] == (header + plaintext).hex()


MESSAGE_TYPES_BY_NAME = {cls.__name__: t for t, cls in MESSAGE_TYPES.items()}


# -- the specification quotes the vectors -----------------------------------------------------------------


def _doc_hex() -> str:
    if not DOC.exists():
        pytest.skip("docs/protocol.md is not part of this checkout (an sdist of the package alone)")
    return re.sub(r"[^0-9a-f]", "", DOC.read_text(encoding="utf-8"))


@pytest.mark.parametrize(
    "path",
    [
        ("openings", "client"),
        ("openings", "server"),
        ("openings", "legacy-1.x-server-version-message"),
        ("handshake_sealed", "k_auth"),
        ("handshake_sealed", "proof_client"),
        ("handshake_sealed", "proof_server"),
        ("handshake_sealed", "key_client_to_server"),
        ("handshake_sealed", "key_server_to_client"),
        ("handshake_aes_gcm", "proof_client"),
        ("handshake_aes_gcm", "proof_server"),
        ("handshake_aes_gcm", "key_client_to_server"),
        ("handshake_aes_gcm", "key_server_to_client"),
    ],
    ids="/".join,
)
def test_spec_quotes_the_key_vectors(path: tuple[str, str]) -> None:
    assert VECTORS[path[0]][path[1]] in _doc_hex()


def test_spec_quotes_the_sealed_transcript_and_first_sealed_frames() -> None:
    doc = _doc_hex()
    vector = VECTORS["handshake_sealed"]
    for piece in vector["client_to_server"] + vector["server_to_client"]:
        assert piece["hex"] in doc
    for entry in vector["after_handshake"][:3]:
        assert entry["frame"] in doc


@pytest.mark.parametrize(
    "path",
    [
        ("openings", "client"),
        ("openings", "server"),
        ("handshake_sealed", "proof_client"),
        ("handshake_sealed", "proof_server"),
        ("handshake_sealed", "key_client_to_server"),
        ("handshake_sealed", "key_server_to_client"),
        ("handshake_plain", "proof_client"),
        ("handshake_plain", "proof_server"),
        ("handshake_aes_gcm", "proof_client"),
        ("handshake_aes_gcm", "proof_server"),
        ("handshake_aes_gcm", "key_client_to_server"),
        ("handshake_aes_gcm", "key_server_to_client"),
        ("downgrade_to_version_1", "server_to_client_after_hello"),
    ],
    ids="/".join,
)
def test_spec_quotes_the_version_2_vectors(path: tuple[str, str]) -> None:
    assert VECTORS_V2[path[0]][path[1]] in _doc_hex()


def test_spec_quotes_the_version_2_sealed_transcript() -> None:
    doc = _doc_hex()
    vector = VECTORS_V2["handshake_sealed"]
    for piece in vector["client_to_server"] + vector["server_to_client"]:
        assert piece["hex"] in doc
    for entry in vector["after_handshake"]:
        assert entry["frame"] in doc


def test_spec_quotes_the_aes_gcm_hellos_and_first_sealed_frames() -> None:
    doc = _doc_hex()
    vector = VECTORS["handshake_aes_gcm"]
    for piece in vector["client_to_server"] + vector["server_to_client"]:
        if piece["piece"] != "opening":  # the same openings as the ChaCha20-Poly1305 vector's
            assert piece["hex"] in doc
    for entry in vector["after_handshake"][:3]:
        assert entry["frame"] in doc
