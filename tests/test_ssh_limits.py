"""Limits on jobs on an ssh:// node: the node's server enforces a job's time limit and stops a terminated job,
as a ppserver does; the next job runs at once. Limits on its workers, from the entry
(`?worker_memory_limit=SIZE&max_jobs_per_worker=N`): a worker over its memory limit is stopped and its job
fails saying so, a worker is replaced after its quota of jobs, a bad value is refused by `Server(...)`."""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from concurrent.futures import CancelledError
from typing import Any

import pytest

import ppft
from clusterlib import wait_until
from sshlib import Sshd
from sshlib import sshd as sshd  # noqa: PLC0414 - the fixture


def hog(megabytes: int, seconds: float) -> int:
    import time

    data = bytearray(megabytes << 20)
    for i in range(0, len(data), 4096):
        data[i] = 1  # touched: resident
    time.sleep(seconds)
    return len(data) >> 20


def worker_pid(n: int) -> tuple[int, int]:
    import os

    return os.getpid(), n


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


def test_a_job_past_the_memory_limit_of_an_ssh_node_fails_and_the_next_one_runs(
    sshd: Sshd, make_client: Callable[..., Any]
) -> None:
    entry = sshd.entry(workers=1, worker_memory_limit="200MiB")
    client = make_client(0, ppservers=(entry,), ssh=sshd.prefix())
    assert client.submit(hog, (10, 0))() == 10  # the node is up
    started = time.monotonic()
    job = client.submit(hog, (400, 30))
    with pytest.raises(ppft.WorkerLostError, match=r"passed the worker memory limit of 200 MiB"):
        job.result(timeout=20)
    assert time.monotonic() - started < 10
    started = time.monotonic()
    assert client.submit(hog, (10, 0))() == 10  # its worker was replaced: the next job runs
    assert time.monotonic() - started < 10


def test_a_worker_of_an_ssh_node_is_replaced_after_max_jobs_per_worker(
    sshd: Sshd, make_client: Callable[..., Any]
) -> None:
    entry = sshd.entry(workers=1, max_jobs_per_worker=3)
    client = make_client(0, ppservers=(entry,), ssh=sshd.prefix())
    jobs = [client.submit(worker_pid, (n,)) for n in range(9)]
    results = [job.result(timeout=30) for job in jobs]
    assert [n for _, n in results] == list(range(9))
    assert len({pid for pid, _ in results}) >= 3


@pytest.mark.parametrize(
    ("option", "problem"),
    [
        ("worker_memory_limit=2gigs", "worker_memory_limit must be a size such as '2GiB'"),
        ("max_jobs_per_worker=0", "max_jobs_per_worker='0' is not a whole number >= 1"),
    ],
)
def test_a_bad_limit_in_an_ssh_entry_is_refused_by_server(
    make_client: Callable[..., Any], option: str, problem: str
) -> None:
    entry = f"ssh://127.0.0.1?workers=1&{option}"
    with pytest.raises(ValueError, match=re.escape(problem)) as info:
        make_client(0, ppservers=(entry,))
    assert entry in str(info.value)
