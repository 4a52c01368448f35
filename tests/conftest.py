"""Fixtures of the integration tests: a cluster of real subprocesses, and clients destroyed at teardown."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from clusterlib import SECRET, Cluster
from scriptlib import script_mode  # noqa: F401 - the fixture, for every test here


@pytest.fixture
def cluster(tmp_path) -> Iterator[Cluster]:  # type: ignore[no-untyped-def]
    c = Cluster(tmp_path)
    try:
        yield c
    finally:
        c.close()


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
