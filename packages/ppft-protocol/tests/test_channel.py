"""The established channel: sealed frames under attack (tampered, replayed, reordered, dropped, truncated,
reflected), the end of the stream and `Bye`, and HKDF checked against RFC 5869 and against `cryptography`.

Every test that takes `established` runs once per cipher: ChaCha20-Poly1305 and AES-256-GCM."""

from __future__ import annotations

import hashlib
from collections.abc import Callable

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from ppft_protocol import (
    AES_256_GCM,
    Bye,
    Closed,
    Connection,
    Heartbeat,
    IntegrityError,
    Job,
    JobBatch,
    Message,
    RemoteProtocolError,
    Role,
    State,
    channel,
)
from ppft_protocol.framing import encode_frame_header, encode_opening
from ppft_protocol.messages import encode_message

Pair = tuple[Connection, Connection]
Established_ = Callable[..., Pair]
MakePair = Callable[..., Pair]

DIGEST = hashlib.sha256(b"f").digest()
NONCE_C = bytes(range(32))
NONCE_S = bytes(range(32, 64))
JOBS = JobBatch((Job(1, DIGEST, b"args-1"), Job(2, DIGEST, b"args-2")))


def frame(message: Message) -> bytes:
    """An unsealed frame, as a peer that ignores the state machine would write it."""
    body = b"".join(encode_message(message))
    return encode_frame_header(message.TYPE, len(body)) + body


def opening(low: int = 1, high: int = 1) -> bytes:
    return encode_opening(low, high, "raw test peer")


@pytest.fixture(params=channel.CIPHERS)
def established(request: pytest.FixtureRequest, established: Established_) -> Established_:
    """conftest's `established`, negotiating the cipher of this run (both sides offer AES-256-GCM, or not)."""
    cipher: str = request.param

    def factory(**kwargs: object) -> Pair:
        kwargs.setdefault("aes_gcm", cipher == AES_256_GCM)
        client, server = established(**kwargs)
        assert client.cipher == server.cipher == (cipher if client.sealed else "")
        return client, server

    return factory


def sent_frames(conn: Connection, messages: list[Message]) -> list[bytes]:
    """Each message's frame as `conn` sends it (sealed or not), one bytes object per message."""
    out = []
    for message in messages:
        conn.send(message)
        out.append(conn.data_to_send())
    return out


# -- attacks on sealed frames -----------------------------------------------------------------------------


def test_sealed_frames_cannot_be_read_on_the_wire(established: Established_) -> None:
    client, _ = established()
    client.send(JobBatch((Job(1, DIGEST, b"top secret arguments"),)))
    assert b"top secret arguments" not in client.data_to_send()


@pytest.mark.parametrize(
    "position", [5, 20, -17, -1], ids=["first-body", "mid-body", "first-tag", "last-tag"]
)
def test_tampered_sealed_frame_raises_integrity_error(established: Established_, position: int) -> None:
    client, server = established()
    (data,) = sent_frames(client, [JOBS])
    tampered = bytearray(data)
    tampered[position] ^= 0x01
    with pytest.raises(IntegrityError, match="sealed frame #0 failed authentication"):
        server.receive_data(bytes(tampered))
    assert server.state is State.CLOSED


def test_sealed_frame_with_a_tampered_type_byte_raises_integrity_error(established: Established_) -> None:
    client, server = established()
    (data,) = sent_frames(client, [JOBS])
    tampered = bytearray(data)
    tampered[4] = Heartbeat.TYPE
    with pytest.raises(IntegrityError):
        server.receive_data(bytes(tampered))


def test_replayed_sealed_frame_raises_integrity_error(established: Established_) -> None:
    client, server = established()
    (data,) = sent_frames(client, [JOBS])
    assert server.receive_data(data) == [JOBS]
    with pytest.raises(IntegrityError, match="sealed frame #1"):
        server.receive_data(data)


def test_reordered_sealed_frames_raise_integrity_error(established: Established_) -> None:
    client, server = established()
    first, second = sent_frames(client, [JOBS, Heartbeat()])
    with pytest.raises(IntegrityError):
        server.receive_data(second + first)


def test_dropped_sealed_frame_makes_the_next_one_fail(established: Established_) -> None:
    client, server = established()
    _, second = sent_frames(client, [JOBS, Heartbeat()])
    with pytest.raises(IntegrityError):
        server.receive_data(second)


def test_frame_from_the_other_direction_raises_integrity_error(established: Established_) -> None:
    _client, server = established()
    (from_server,) = sent_frames(server, [JOBS])
    with pytest.raises(IntegrityError):
        server.receive_data(from_server)  # reflected back at its sender: the keys are per direction


def test_truncated_sealed_frame_with_a_consistent_header_raises_integrity_error(
    established: Established_,
) -> None:
    client, server = established()
    (data,) = sent_frames(client, [JOBS])
    body = data[5:-8]
    with pytest.raises(IntegrityError):
        server.receive_data(encode_frame_header(data[4], len(body)) + body)


@pytest.mark.parametrize("length", [0, 1, 15, 16])
def test_sealed_frame_too_short_to_hold_a_tag_raises_integrity_error(
    established: Established_, length: int
) -> None:
    _client, server = established()
    with pytest.raises(IntegrityError):
        server.receive_data(encode_frame_header(JobBatch.TYPE, length) + bytes(length))


def test_unsealed_frame_on_a_sealed_channel_raises_integrity_error(established: Established_) -> None:
    _, server = established()
    with pytest.raises(IntegrityError):
        server.receive_data(frame(JOBS))


def test_sealed_counters_run_per_direction(established: Established_) -> None:
    client, server = established()
    for _ in range(3):
        client.send(Heartbeat())
    assert server.receive_data(client.data_to_send()) == [Heartbeat()] * 3
    server.send(JOBS)
    assert client.receive_data(server.data_to_send()) == [JOBS]


def test_session_keys_differ_per_direction_and_per_connection() -> None:
    c2s, s2c = channel.session_keys(b"s", 1, NONCE_C, NONCE_S)
    other_c2s, _ = channel.session_keys(b"s", 1, NONCE_S, NONCE_C)
    assert len({c2s, s2c, other_c2s}) == 3


# -- end of stream ----------------------------------------------------------------------------------------


def test_eof_at_a_frame_boundary_is_a_clean_close(established: Established_) -> None:
    _, server = established()
    assert server.receive_data(b"") == [Closed("peer closed the connection")]
    assert server.state is State.CLOSED


def test_eof_mid_frame_says_the_last_frame_is_truncated(established: Established_) -> None:
    client, server = established()
    (data,) = sent_frames(client, [JOBS])
    assert server.receive_data(data[:-3]) == []
    with pytest.raises(RemoteProtocolError, match="in the middle of a frame"):
        server.receive_data(b"")


def test_eof_mid_header_says_the_last_frame_is_truncated(established: Established_) -> None:
    _, server = established()
    server.receive_data(b"\x00\x00")
    with pytest.raises(RemoteProtocolError, match="truncated"):
        server.receive_data(b"")


def test_eof_during_the_handshake_is_a_remote_error(pair_factory: MakePair) -> None:
    client, server = pair_factory()
    server.receive_data(client.data_to_send())
    with pytest.raises(RemoteProtocolError, match="during the handshake"):
        server.receive_data(b"")


def test_eof_mid_opening_is_a_remote_error() -> None:
    server = Connection(Role.SERVER, b"secret")
    server.receive_data(opening()[:5])
    with pytest.raises(RemoteProtocolError, match="during the handshake"):
        server.receive_data(b"")


def test_bye_closes_both_sides_and_ignores_what_follows(established: Established_) -> None:
    client, server = established()
    client.send(Bye("done"))
    assert client.state is State.CLOSED
    after = frame(Heartbeat())  # well framed, but nothing may follow a Bye
    assert server.receive_data(client.data_to_send() + after) == [Bye("done"), Closed("done")]
    assert server.state is State.CLOSED


# -- HKDF -------------------------------------------------------------------------------------------------

RFC5869 = [
    (
        b"\x0b" * 22,
        bytes(range(13)),
        bytes(range(0xF0, 0xFA)),
        42,
        "3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf34007208d5b887185865",
    ),
    (
        bytes(range(0x50)),
        bytes(range(0x60, 0xB0)),
        bytes(range(0xB0, 0x100)),
        82,
        "b11e398dc80327a1c8e7f78c596a49344f012eda2d4efad8a050cc4c19afa97c59045a99cac7827271cb41c65e590e09"
        "da3275600c2f09b8367793a9aca3db71cc30c58179ec3e87c14c01d5c1f3434f1d87",
    ),
    (
        b"\x0b" * 22,
        b"",
        b"",
        42,
        "8da4e775a563c18f715f802a063c5a31b8a11f5c5ee1879ec3454e5f3c738d2d9d201395faa4b61a96c8",
    ),
]


@pytest.mark.parametrize("ikm, salt, info, length, okm", RFC5869, ids=["case-1", "case-2", "case-3"])
def test_hkdf_matches_the_rfc_5869_test_vectors(
    ikm: bytes, salt: bytes, info: bytes, length: int, okm: str
) -> None:
    assert channel.hkdf_sha256(ikm, salt, info, length).hex() == okm


@pytest.mark.parametrize("length", [1, 31, 32, 33, 64, 255, 1000, 8160])
@pytest.mark.parametrize("salt", [b"", b"ppft-protocol", bytes(range(64)), bytes(200)])
def test_hkdf_matches_cryptography(length: int, salt: bytes) -> None:
    ikm, info = b"some secret", b"ppft-seal/\x00\x01/client-to-server"
    theirs = HKDF(algorithm=hashes.SHA256(), length=length, salt=salt or None, info=info).derive(ikm)
    assert channel.hkdf_sha256(ikm, salt, info, length) == theirs


@pytest.mark.parametrize("length", [0, 8161])
def test_hkdf_refuses_lengths_outside_rfc_5869(length: int) -> None:
    with pytest.raises(ValueError, match=r"1\.\.8160"):
        channel.hkdf_sha256(b"k", b"", b"", length)


_LAYOUTS = [(1 << 16,), (3, 1 << 16, 0, 17), (1 << 20, 1, 1 << 17), (0, 70_001)]


@pytest.mark.parametrize("cipher", [channel.CHACHA20_POLY1305, AES_256_GCM])
@pytest.mark.parametrize("sizes", _LAYOUTS, ids=["one", "mixed", "big", "empty"])
def test_a_large_frame_sealed_by_parts_is_the_frame_sealed_whole(cipher: str, sizes: tuple[int, ...]) -> None:
    parts: list[bytes | memoryview] = []
    for i, n in enumerate(sizes):
        data = bytes((i * 7 + j) % 251 for j in range(min(n, 1000))) * (n // 1000 + 1)
        parts.append(memoryview(bytearray(data[:n])) if i % 2 else data[:n])
    size = sum(len(p) for p in parts)
    header = encode_frame_header(0x21, size + channel.TAG_SIZE)
    key = bytes(range(32))
    by_parts, whole = channel.Sealer(key, cipher), channel.Sealer(key, cipher)
    opener = channel.Opener(key, cipher)
    for _ in range(2):  # the counter moves on alike
        sealed = by_parts.seal_parts(header, parts, size)
        assert bytes(sealed) == whole.seal(header, b"".join(parts))
        assert bytes(opener.open(header, bytes(sealed))) == b"".join(parts)
