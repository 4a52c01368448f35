"""Peers that cannot be used are named, with the reason, within seconds: never silent, never a hang."""

from __future__ import annotations

import logging
import socket
import struct
import threading
import time

import pytest

from clusterlib import wait_until
from ppft_protocol import PROTOCOL_VERSIONS


def add_one(x):
    return x + 1


class FakeServer:
    """A listening socket on 127.0.0.1 that answers every connection with fixed bytes, then reads."""

    def __init__(self, greeting: bytes) -> None:
        self.greeting = greeting
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.received = b""
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            with conn:
                conn.sendall(self.greeting)
                conn.settimeout(0.5)
                try:
                    self.received += conn.recv(4096)
                except OSError:
                    pass

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.sock.close()


@pytest.fixture
def fake_server():
    servers: list[FakeServer] = []

    def make(greeting: bytes) -> FakeServer:
        server = FakeServer(greeting)
        servers.append(server)
        return server

    yield make
    for server in servers:
        server.close()


def legacy_message(text: bytes) -> bytes:
    """How ppft 1.x frames a message on its sockets: an 8-byte big-endian length, then the bytes."""
    return struct.pack("!Q", len(text)) + text


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
