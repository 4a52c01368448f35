"""Fixtures of the meta-package's tests: servers (job servers and ppservers) that are always destroyed."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

import ppft
from ppft.server import NetworkServer, create_network_server

SECRET = "ppft-meta-package-test-secret"


@pytest.fixture
def make_server() -> Iterator[Callable[..., ppft.Server]]:
    """`make_server(ncpus, ...)`: a `ppft.Server` destroyed at teardown, pass or fail."""
    servers: list[ppft.Server] = []

    def make(*args: Any, **kwargs: Any) -> ppft.Server:
        kwargs.setdefault("secret", SECRET)
        server = ppft.Server(*args, **kwargs)
        servers.append(server)
        return server

    yield make
    for server in servers:
        server.destroy()


@pytest.fixture
def network_server(tmp_path) -> Iterator[NetworkServer]:
    """A ppserver in this process (bound, not serving: call `listen()`), with a pid file; destroyed at
    teardown."""
    server = create_network_server(
        ["-p", "0", "-i", "127.0.0.1", "-w", "1", "-s", SECRET, "-P", str(tmp_path / "ppserver.pid")]
    )
    try:
        yield server
    finally:
        server.destroy()
