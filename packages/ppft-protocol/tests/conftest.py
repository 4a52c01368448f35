"""Shared helpers of the ppft-protocol tests, handed out as fixtures (tests run with --import-mode=importlib,
so test modules cannot import one another): making connection pairs, pumping bytes between them, and
splitting a byte stream into frames the way a peer would see it."""

from __future__ import annotations

import struct
from collections.abc import Callable

import pytest

from ppft_protocol import Connection, Event, Role, State

SECRET = b"correct horse battery staple"

Pair = tuple[Connection, Connection]
Pump = Callable[[Connection, Connection], tuple[list[Event], list[Event]]]
MakePair = Callable[..., Pair]


def pump(client: Connection, server: Connection) -> tuple[list[Event], list[Event]]:
    """Move bytes both ways until neither side has anything to send; (client events, server events)."""
    client_events: list[Event] = []
    server_events: list[Event] = []
    for _ in range(100):
        to_server = client.data_to_send()
        if to_server:
            server_events += server.receive_data(to_server)
        to_client = server.data_to_send()
        if to_client:
            client_events += client.receive_data(to_client)
        if not to_server and not to_client:
            return client_events, server_events
    raise AssertionError("the two connections never stopped talking")


def make_pair(
    client_secret: bytes | str = SECRET, server_secret: bytes | str = SECRET, **kwargs: object
) -> Pair:
    """A client and a server connection; `client_*=`/`server_*=` keywords go to one side, others to both."""
    client_kw = {k[len("client_") :]: v for k, v in kwargs.items() if k.startswith("client_")}
    server_kw = {k[len("server_") :]: v for k, v in kwargs.items() if k.startswith("server_")}
    both = {k: v for k, v in kwargs.items() if not k.startswith(("client_", "server_"))}
    client = Connection(Role.CLIENT, client_secret, **both, **client_kw)  # type: ignore[arg-type]
    server = Connection(Role.SERVER, server_secret, **both, **server_kw)  # type: ignore[arg-type]
    return client, server


def split_frames(stream: bytes, *, opening: bool = False) -> list[bytes]:
    """Cut a byte stream at its frame boundaries (after its opening, when `opening`): whole frames."""
    pieces: list[bytes] = []
    off = 0
    if opening:
        (length,) = struct.unpack_from(">Q", stream, 0)
        pieces.append(stream[: 8 + length])
        off = 8 + length
    while off < len(stream):
        (length,) = struct.unpack_from(">I", stream, off)
        pieces.append(stream[off : off + 5 + length])
        off += 5 + length
    return pieces


@pytest.fixture
def pair_factory() -> MakePair:
    return make_pair


@pytest.fixture
def pump_bytes() -> Pump:
    return pump


@pytest.fixture
def established() -> Callable[..., Pair]:
    """A factory of connection pairs that have finished their handshake (sealed unless told otherwise)."""

    def factory(**kwargs: object) -> Pair:
        client, server = make_pair(**kwargs)
        pump(client, server)
        assert client.state is State.ESTABLISHED
        assert server.state is State.ESTABLISHED
        return client, server

    return factory


@pytest.fixture
def frames_of() -> Callable[..., list[bytes]]:
    return split_frames
