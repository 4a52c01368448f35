"""Fixtures of ppft-worker's tests: worker processes started as a pool starts them (`workerpipe`), and a
running `Loop` (`looplib`)."""

from __future__ import annotations

import functools
import subprocess
from collections.abc import Callable, Iterator

import pytest
from looplib import running
from workerpipe import Driver, end_workers, start_worker

from ppft_worker.runtime.loop import Loop


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


@pytest.fixture
def running_loop() -> Iterator[Loop]:
    """A `Loop` running on a thread of its own (`loop.thread`); stopped after the test, which fails if it
    does not stop."""
    yield from running()
