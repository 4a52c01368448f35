"""Fixtures of the integration tests: a cluster of real subprocesses, and clients destroyed at teardown."""

from __future__ import annotations

import os
import signal
from collections.abc import Callable, Iterator

import pytest

from clusterlib import SECRET, Cluster, pid_alive
from peerlib import FakePeer
from scriptlib import module_mode, module_ppserver, protocol_1_ppserver, script_mode  # noqa: F401 - fixtures for every test here


@pytest.fixture
def cluster(tmp_path) -> Iterator[Cluster]:  # type: ignore[no-untyped-def]
    c = Cluster(tmp_path)
    try:
        yield c
    finally:
        c.close()


@pytest.fixture
def stray_pids() -> Iterator[list[int]]:
    """Pids of processes a test learnt of (direct workers, a fork server, a script's children): SIGKILLed at
    teardown if still alive, whatever happened."""
    pids: list[int] = []
    yield pids
    for pid in pids:
        if pid_alive(pid):
            os.kill(pid, signal.SIGKILL)


@pytest.fixture
def make_client() -> Iterator[Callable[..., object]]:
    """ppft Servers (clients) destroyed at teardown."""
    import ppft

    servers: list[ppft.Server] = []

    def make(*args: object, **kwargs: object) -> ppft.Server:
        kwargs.setdefault("secret", SECRET)
        server = ppft.Server(*args, **kwargs)  # type: ignore[arg-type]
        servers.append(server)
        return server

    yield make
    for server in servers:
        server.destroy()


@pytest.fixture
def fake_peer() -> Iterator[Callable[..., FakePeer]]:
    """Listeners that are not ppft (`peerlib.FakePeer(handler)`), closed at teardown."""
    peers: list[FakePeer] = []

    def make(handler: Callable[..., None]) -> FakePeer:
        peer = FakePeer(handler)
        peers.append(peer)
        return peer

    yield make
    for peer in peers:
        peer.close()
