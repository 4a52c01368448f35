"""Limits on jobs on an ssh:// node: the node's server enforces a job's time limit and stops a terminated job,
as a ppserver does; the next job runs at once."""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import CancelledError
from typing import Any

import pytest

import ppft
from clusterlib import wait_until
from sshlib import Sshd
from sshlib import sshd as sshd  # noqa: PLC0414 - the fixture


def nap(seconds: float) -> float:
    import time

    time.sleep(seconds)
    return seconds


def test_a_job_past_its_timeout_on_an_ssh_node_raises_job_timeout_error(
    sshd: Sshd, make_client: Callable[..., Any]
) -> None:
    client = make_client(0, ppservers=(sshd.entry(workers=1),), ssh=sshd.prefix())
    assert client.submit(nap, (0,))() == 0  # the node is up
    started = time.monotonic()
    job = client.submit(nap, (30,), timeout=1)
    with pytest.raises(ppft.JobTimeoutError, match=r"ran longer than its timeout of 1 s"):
        job.result(timeout=20)
    assert time.monotonic() - started < 10
    assert client.submit(nap, (0,))() == 0  # its worker was replaced: the next job runs


def test_terminate_stops_a_running_job_on_an_ssh_node(sshd: Sshd, make_client: Callable[..., Any]) -> None:
    client = make_client(0, ppservers=(sshd.entry(workers=1),), ssh=sshd.prefix())
    assert client.submit(nap, (0,))() == 0
    job = client.submit(nap, (30,))
    wait_until(job.running, 20, "the job sent to the node")
    assert job.terminate()
    with pytest.raises(CancelledError):
        job.result(timeout=10)
    started = time.monotonic()
    assert client.submit(nap, (0,))() == 0
    assert time.monotonic() - started < 10  # the 30 s job no longer holds the node's one worker
