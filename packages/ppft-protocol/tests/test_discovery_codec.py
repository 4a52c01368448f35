"""Discovery datagrams: the documented byte layout, round trips, and strict refusal of anything else."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ppft_protocol import DecodeError, LocalProtocolError
from ppft_protocol.discovery import (
    DISCOVERY_MAGIC,
    MAX_DATAGRAM_SIZE,
    MAX_NAME_BYTES,
    Announce,
    Query,
    decode_datagram,
    encode_datagram,
)

# The golden vectors of docs/protocol.md, "Discovery datagrams".
QUERY_BYTES = bytes.fromhex("5050465444534331 51")
ANNOUNCE_BYTES = bytes.fromhex("5050465444534331 41 ea60 00000001 00000002 04 6e6f6465")


def test_query_encodes_to_the_documented_bytes() -> None:
    assert encode_datagram(Query()) == QUERY_BYTES


def test_announce_encodes_to_the_documented_bytes() -> None:
    assert encode_datagram(Announce(60000, 1, 2, "node")) == ANNOUNCE_BYTES


def test_documented_bytes_decode_to_the_documented_values() -> None:
    assert decode_datagram(QUERY_BYTES) == Query()
    assert decode_datagram(ANNOUNCE_BYTES) == Announce(60000, 1, 2, "node")


def test_every_datagram_opens_with_the_magic() -> None:
    assert QUERY_BYTES.startswith(DISCOVERY_MAGIC)
    assert ANNOUNCE_BYTES.startswith(DISCOVERY_MAGIC)


def test_longest_announce_fits_the_documented_maximum() -> None:
    data = encode_datagram(Announce(65535, 1, 0xFFFFFFFF, "é" * (MAX_NAME_BYTES // 2)))
    assert len(data) <= MAX_DATAGRAM_SIZE
    assert len(encode_datagram(Announce(1, 1, 1, "x" * MAX_NAME_BYTES))) == MAX_DATAGRAM_SIZE


@given(
    port=st.integers(1, 65535),
    low=st.integers(1, 1000),
    span=st.integers(0, 1000),
    name=st.text(max_size=60).filter(lambda s: len(s.encode("utf-8", "surrogatepass")) <= 255),
)
def test_announce_round_trips(port: int, low: int, span: int, name: str) -> None:
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        with pytest.raises(LocalProtocolError):
            encode_datagram(Announce(port, low, low + span, name))
        return
    announce = Announce(port, low, low + span, name)
    assert decode_datagram(encode_datagram(announce)) == announce


@given(st.binary(max_size=300))
def test_random_bytes_decode_or_raise_decode_error(data: bytes) -> None:
    try:
        result = decode_datagram(data)
    except DecodeError:
        return
    assert encode_datagram(result) == data  # whatever decodes is exactly one canonical datagram


@pytest.mark.parametrize("legacy", [b"S", b"C"])
def test_legacy_ppft_datagram_is_refused_by_name(legacy: bytes) -> None:
    with pytest.raises(DecodeError, match=r"legacy ppft 1\.x"):
        decode_datagram(legacy)


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "no b'PPFTDSC1' magic"),
        (b"PPFTDSC2Q", "no b'PPFTDSC1' magic"),
        (DISCOVERY_MAGIC, "no b'PPFTDSC1' magic"),
        (QUERY_BYTES + b"\0", "expected exactly 9"),
        (DISCOVERY_MAGIC + b"Z", "unknown discovery datagram kind 0x5a"),
        (ANNOUNCE_BYTES[:-1], "name length says"),
        (ANNOUNCE_BYTES + b"x", "name length says"),
        (ANNOUNCE_BYTES[:12], "truncated discovery announce"),
        (DISCOVERY_MAGIC + bytes.fromhex("41 0000 00000001 00000001 00"), "TCP port 0"),
        (DISCOVERY_MAGIC + bytes.fromhex("41 ea60 00000002 00000001 00"), "empty protocol version"),
        (DISCOVERY_MAGIC + bytes.fromhex("41 ea60 00000000 00000001 00"), "empty protocol version"),
        (DISCOVERY_MAGIC + bytes.fromhex("41 ea60 00000001 00000001 01 ff"), "not valid UTF-8"),
    ],
)
def test_malformed_datagram_is_refused(data: bytes, reason: str) -> None:
    with pytest.raises(DecodeError) as info:
        decode_datagram(data)
    assert reason in str(info.value)


@pytest.mark.parametrize(
    ("announce", "reason"),
    [
        (Announce(0, 1, 1), "port 0"),
        (Announce(65536, 1, 1), "port 65536"),
        (Announce(60000, 2, 1), "range 2-1"),
        (Announce(60000, 0, 1), "range 0-1"),
        (Announce(60000, 1, 1 << 32), "out of range"),
        (Announce(60000, 1, 1, "x" * (MAX_NAME_BYTES + 1)), "over the 255-byte limit"),
    ],
)
def test_unencodable_announce_is_a_local_error(announce: Announce, reason: str) -> None:
    with pytest.raises(LocalProtocolError) as info:
        encode_datagram(announce)
    assert reason in str(info.value)


def test_decode_accepts_a_memoryview() -> None:
    assert decode_datagram(memoryview(ANNOUNCE_BYTES)) == Announce(60000, 1, 2, "node")
