"""The UDP datagrams of auto-discovery (`ppserver -a`, wildcard ppservers such as ``*`` on the client).

Two datagrams, specified in docs/protocol.md ("Discovery datagrams"):

* `Query`: a client asks every ppserver on the broadcast domain to announce itself now;
* `Announce`: a ppserver says it listens on TCP port P, under a name, speaking protocol versions A to B.

Both have one small fixed binary layout that opens with a magic, and decoding is strict: a datagram that is
anything else (a ppft 1.x ``S``/``C`` byte, a truncated or padded datagram, a zero port, an empty version
range, bad UTF-8) raises `DecodeError` and is ignored by the caller. A datagram authenticates nothing: it
only tells a client where to try the authenticated TCP handshake, so whoever can forge one can at worst make
a client try a connection that then fails its handshake.

This module does no I/O: no sockets, no clock. It only turns datagrams into these values and back.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import TypeAlias

from .errors import DecodeError, LocalProtocolError

__all__ = [
    "DISCOVERY_MAGIC",
    "MAX_DATAGRAM_SIZE",
    "MAX_NAME_BYTES",
    "Announce",
    "Datagram",
    "Query",
    "decode_datagram",
    "encode_datagram",
]

DISCOVERY_MAGIC = b"PPFTDSC1"
"""First 8 bytes of every discovery datagram (the trailing ``1`` is the datagram format)."""

MAX_NAME_BYTES = 255
"""Longest name an `Announce` carries, in UTF-8 bytes."""

_KIND_QUERY = 0x51  # "Q"
_KIND_ANNOUNCE = 0x41  # "A"
_HEAD = struct.Struct(">8sB")  # magic, kind
_ANNOUNCE = struct.Struct(">HIIB")  # tcp port, lowest version, highest version, name length
_MAX_VERSION = 0xFFFFFFFF

MAX_DATAGRAM_SIZE = _HEAD.size + _ANNOUNCE.size + MAX_NAME_BYTES
"""The largest discovery datagram (an `Announce` with the longest name): a big enough receive buffer."""


@dataclass(frozen=True, slots=True)
class Query:
    """A client's "announce yourselves": every ppserver that hears it answers with an `Announce` at once."""


@dataclass(frozen=True, slots=True)
class Announce:
    """A ppserver listens on `tcp_port` (of the datagram's sender address) and speaks these versions."""

    tcp_port: int
    min_version: int
    max_version: int
    name: str = ""


Datagram: TypeAlias = "Query | Announce"


def encode_datagram(datagram: Datagram) -> bytes:
    """The bytes of `datagram`; raises `LocalProtocolError` for a value that has no encoding."""
    if isinstance(datagram, Query):
        return _HEAD.pack(DISCOVERY_MAGIC, _KIND_QUERY)
    if not isinstance(datagram, Announce):
        raise LocalProtocolError(f"not a discovery datagram: {datagram!r}")
    if not 0 < datagram.tcp_port <= 0xFFFF:
        raise LocalProtocolError(f"announced TCP port {datagram.tcp_port} is not in 1-65535")
    if not 0 < datagram.min_version <= datagram.max_version <= _MAX_VERSION:
        raise LocalProtocolError(
            f"announced protocol version range {datagram.min_version}-{datagram.max_version} is empty or "
            f"out of range"
        )
    try:
        name = datagram.name.encode("utf-8")
    except UnicodeEncodeError:
        raise LocalProtocolError(f"announced name {datagram.name!r} cannot be encoded as UTF-8") from None
    if len(name) > MAX_NAME_BYTES:
        raise LocalProtocolError(
            f"announced name is {len(name)} bytes of UTF-8, over the {MAX_NAME_BYTES}-byte limit: shorten it"
        )
    return (
        _HEAD.pack(DISCOVERY_MAGIC, _KIND_ANNOUNCE)
        + _ANNOUNCE.pack(datagram.tcp_port, datagram.min_version, datagram.max_version, len(name))
        + name
    )


def decode_datagram(data: bytes | bytearray | memoryview) -> Datagram:
    """The datagram in `data`, which must be exactly one whole datagram; else `DecodeError`."""
    data = bytes(data)
    if len(data) < _HEAD.size or not data.startswith(DISCOVERY_MAGIC):
        if data in (b"S", b"C"):
            raise DecodeError(
                f"legacy ppft 1.x discovery datagram {data!r}: this ppft speaks only its own discovery format"
            )
        raise DecodeError(f"not a ppft discovery datagram ({len(data)} bytes, no {DISCOVERY_MAGIC!r} magic)")
    kind = data[len(DISCOVERY_MAGIC)]
    if kind == _KIND_QUERY:
        if len(data) != _HEAD.size:
            raise DecodeError(f"discovery query of {len(data)} bytes, expected exactly {_HEAD.size}")
        return Query()
    if kind != _KIND_ANNOUNCE:
        raise DecodeError(f"unknown discovery datagram kind 0x{kind:02x}")
    body = data[_HEAD.size :]
    if len(body) < _ANNOUNCE.size:
        raise DecodeError(f"truncated discovery announce: {len(data)} bytes")
    port, low, high, name_len = _ANNOUNCE.unpack_from(body)
    if len(body) != _ANNOUNCE.size + name_len:
        raise DecodeError(
            f"discovery announce of {len(data)} bytes, but its name length says "
            f"{_HEAD.size + _ANNOUNCE.size + name_len}"
        )
    if port == 0:
        raise DecodeError("discovery announce names TCP port 0")
    if not 0 < low <= high:
        raise DecodeError(f"discovery announce has an empty protocol version range {low}-{high}")
    try:
        name = body[_ANNOUNCE.size :].decode("utf-8")
    except UnicodeDecodeError:
        raise DecodeError("discovery announce name is not valid UTF-8") from None
    return Announce(port, low, high, name)
