"""A `Server` whose batching learnt a function as tiny still runs 16 long calls of it on both workers: the
idle worker takes back jobs queued behind a long one (`ppft_worker.pool.stealing`), each result exactly
once."""

from __future__ import annotations

import threading
from collections.abc import Callable

import ppft_client


def spin(n):  # type: ignore[no-untyped-def]
    t = 0
    for i in range(n):
        t += i * i
    return os.getpid()  # noqa: F821 - from modules=("os",)


def test_long_jobs_after_a_tiny_one_run_on_both_workers(
    make_server: Callable[..., ppft_client.Server],
) -> None:
    server = make_server(2)
    server.submit(spin, (10,), modules=("os",))()  # the batching learns: spin is tiny
    lock = threading.Lock()
    calls: list[int] = []
    all_called = threading.Event()

    def callback(pid: int) -> None:
        with lock:
            calls.append(pid)
            if len(calls) == 16:
                all_called.set()

    jobs = [server.submit(spin, (1_000_000,), modules=("os",), callback=callback) for _ in range(16)]
    pids = [job() for job in jobs]
    assert all_called.wait(30.0), f"{len(calls)} callbacks of 16 ran"
    assert len(set(pids)) == 2
    assert sorted(calls) == sorted(pids)  # one callback per job
