"""Peers that cannot be used are named, with the reason, within seconds: never silent, never a hang."""

from __future__ import annotations

import logging
import socket
import struct
import time

import pytest

from clusterlib import wait_until
from peerlib import greeting_then_read, legacy_message
from ppft_protocol import PROTOCOL_VERSIONS


def add_one(x):
    return x + 1


@pytest.fixture
def fake_server(fake_peer):
    """A peer that answers every connection with fixed bytes, then reads (into its `.received`)."""

    def make(greeting: bytes):
        received = bytearray()
        peer = fake_peer(greeting_then_read(greeting, received))
        peer.received = received
        return peer

    return make


def test_fake_legacy_ppft_1x_server_is_named(fake_server, make_client, caplog):
    caplog.set_level(logging.WARNING, logger="ppft")
    server = fake_server(legacy_message(b"1.7.8") + legacy_message(b"0123456789abcdef"))
    start = time.monotonic()
    client = make_client(1, ppservers=(f"127.0.0.1:{server.port}",))
    wait_until(lambda: "legacy ppft 1.x" in caplog.text, 5, "the legacy-server warning")
    assert time.monotonic() - start < 3
    assert ("1.7.8" in caplog.text and "upgrade" in caplog.text.lower()) or "install ppft" in caplog.text
    assert client.submit(add_one, (1,)).result(timeout=30) == 2
    assert set(client.get_active_nodes()) == {"local"}


def test_peer_speaking_only_a_newer_protocol_is_named(fake_server, make_client, caplog):
    caplog.set_level(logging.WARNING, logger="ppft")
    server = fake_server(legacy_message(b"ppft-protocol/7-9 (ppft 9.0)"))
    make_client(1, ppservers=(f"127.0.0.1:{server.port}",))
    wait_until(lambda: "protocol mismatch" in caplog.text, 5, "the protocol-mismatch warning")
    assert "7-9" in caplog.text and "{}-{}".format(*PROTOCOL_VERSIONS) in caplog.text


def test_legacy_client_sees_a_readable_version_mismatch(cluster):
    """A ppft 1.x client reads the server's first message as its version string: it must be legible."""
    node = cluster.ppserver(1)
    with socket.create_connection(("127.0.0.1", node.port), timeout=5) as sock:
        (length,) = struct.unpack("!Q", sock.recv(8, socket.MSG_WAITALL))
        text = sock.recv(length, socket.MSG_WAITALL).decode("ascii")
    assert text.startswith("ppft-protocol/{}-{}".format(*PROTOCOL_VERSIONS))
    assert "not compatible with ppft 1.x" in text


def test_ppserver_names_a_client_that_resets_before_its_opening(cluster):
    """A ppft 1.x client reads our opening, sees a version mismatch and resets: the log says so."""
    node = cluster.ppserver(1)
    with socket.create_connection(("127.0.0.1", node.port), timeout=5) as sock:
        sock.recv(8, socket.MSG_WAITALL)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # close = reset
    wait_until(lambda: "ppft 1.x client" in cluster.read_log(node), 10, "the legacy-client hint in the log")
