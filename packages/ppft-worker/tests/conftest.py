"""Fixtures of ppft-worker's tests: worker processes started as a pool starts them (`workerpipe`)."""

from __future__ import annotations

import functools
import subprocess
from collections.abc import Callable, Iterator

import pytest
from workerpipe import Driver, end_workers, start_worker


@pytest.fixture
def spawn() -> Iterator[Callable[..., subprocess.Popen[bytes]]]:
    """Start worker processes; each is killed by pid at the end of the test, passed or failed."""
    procs: list[subprocess.Popen[bytes]] = []
    try:
        yield functools.partial(start_worker, procs)
    finally:
        end_workers(procs)


@pytest.fixture
def worker(spawn: Callable[..., subprocess.Popen[bytes]]) -> Driver:
    driver = Driver(spawn())
    driver.handshake()
    return driver
