"""One failing callback in a ppserver's I/O thread closes only what it belongs to; the ppserver goes on.

The ppserver runs in this process (a `NodeServer` on a thread of its own, with real worker processes) so
that faults can be injected into it; its clients are real `ppft.Server`s and its dial-in workers real
`ppft-worker --connect` processes. For a session (reader, writer, timer), the listener, the dispatch to the
local workers and to a dial-in link, and the handing over of results, a fault is injected once: every job
still gets its right value, the failure is logged once with its traceback, and the ppserver keeps serving a
new client.
"""

from __future__ import annotations

import logging
import sys
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest

import ppft
from clusterlib import SECRET, Cluster, Proc, wait_until
from faultlib import assert_logged_once, inject
from ppft_server.node import NodeServer
from ppft_worker.pool import WorkerPool
from ppft_worker.runtime import link as link_module
from ppft_worker.runtime.stream import Stream

TIMEOUT = 60


def add_one(x):
    return x + 1


def slow_add(x, seconds):
    import time

    time.sleep(seconds)
    return x + 1


def big(n):
    return b"x" * n


@pytest.fixture(autouse=True)
def _logs(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="ppft")


class Served:
    """A `NodeServer` serving on its own thread of this process."""

    def __init__(self, workers: int) -> None:
        self.node = NodeServer(
            host="127.0.0.1", port=0, secret=SECRET.encode(), workers=workers, accept_workers=True
        )
        self.port = self.node.bind()[1]
        self.address = f"127.0.0.1:{self.port}"
        self.thread = threading.Thread(target=self.node.serve_forever, name="ppserver-test", daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.node.stop()
        self.thread.join(30)
        assert not self.thread.is_alive(), "the ppserver did not stop"


@pytest.fixture
def serve() -> Iterator[Callable[..., Served]]:
    made: list[Served] = []

    def start(workers: int = 2) -> Served:
        served = Served(workers)
        made.append(served)
        return served

    yield start
    for served in made:
        served.close()


@pytest.fixture
def client() -> Iterator[Callable[[Served], ppft.Server]]:
    made: list[ppft.Server] = []

    def make(served: Served) -> ppft.Server:
        server = ppft.Server(0, ppservers=(served.address,), secret=SECRET)
        made.append(server)
        return server

    yield make
    for server in made:
        server.destroy()


def _server_side(stream: Stream) -> bool:
    """A stream of the ppserver (its peer is an address), not of the client in this same process."""
    return not stream.peer.startswith("ppserver ")


def _session_with_jobs(stream: Stream) -> bool:
    session = getattr(stream._on_event, "__self__", None)
    return _server_side(stream) and session is not None and session.authenticated and bool(session.lane)


def run_jobs(server: ppft.Server, n: int = 20, seconds: float = 0.05) -> None:
    jobs = [server.submit(slow_add, (i, seconds)) for i in range(n)]
    assert [job.result(timeout=TIMEOUT) for job in jobs] == list(range(1, n + 1))


def assert_still_serving(served: Served, client: Callable[[Served], ppft.Server]) -> None:
    """The ppserver's thread lives, and a new client gets its results."""
    assert served.thread.is_alive()
    run_jobs(client(served), n=10, seconds=0.0)


# -- a session -----------------------------------------------------------------------------------------


def test_session_reader_failure_closes_that_session_only(monkeypatch, serve, client, caplog):
    served = serve()
    fault = inject(monkeypatch, Stream, "_readable", when=_session_with_jobs)
    run_jobs(client(served))
    assert_logged_once(caplog, fault)
    assert "internal error in the I/O thread (InjectedFault" in caplog.text
    assert_still_serving(served, client)


def test_session_writer_failure_closes_that_session_only(monkeypatch, serve, client, caplog):
    served = serve()
    fault = inject(monkeypatch, Stream, "_writable", when=_server_side)
    server = client(served)
    assert len(server.submit(big, (32 << 20,)).result(timeout=TIMEOUT)) == 32 << 20  # fills the socket
    assert_logged_once(caplog, fault)
    assert_still_serving(served, client)


def test_session_heartbeat_timer_failure_closes_that_session_only(monkeypatch, serve, client, caplog):
    served = serve()
    fault = inject(monkeypatch, Stream, "_tick", when=_server_side)
    server = client(served)
    assert server.submit(slow_add, (1, 1.5)).result(timeout=TIMEOUT) == 2  # outlives the first heartbeat
    assert_logged_once(caplog, fault)
    assert_still_serving(served, client)


def test_listener_failure_pauses_accepting_and_never_stops_it(monkeypatch, serve, client, caplog):
    fault = inject(monkeypatch, NodeServer, "_arrived")  # what the listener's Door does per connection
    served = serve()
    run_jobs(client(served))
    assert_logged_once(caplog, fault)
    assert_still_serving(served, client)


# -- the ppserver's dispatch and results -----------------------------------------------------------------


def test_dispatch_failure_to_a_local_worker_loses_no_job(monkeypatch, serve, client, caplog):
    served = serve()
    fault = inject(monkeypatch, WorkerPool, "_send", when=lambda pool, w, tasks: pool is served.node.pool)
    run_jobs(client(served))
    assert_logged_once(caplog, fault)
    assert_still_serving(served, client)


def test_results_that_cannot_be_handed_over_run_again_and_arrive(monkeypatch, serve, client, caplog):
    fault = inject(monkeypatch, NodeServer, "raw_results")  # before the pool takes the bound method
    served = serve()
    run_jobs(client(served))
    assert_logged_once(caplog, fault)
    assert_still_serving(served, client)


# -- a dial-in link ---------------------------------------------------------------------------------------


@pytest.fixture
def dialin(tmp_path) -> Iterator[Callable[[Served], Proc]]:  # type: ignore[no-untyped-def]
    cluster = Cluster(tmp_path)

    def start(served: Served) -> Proc:
        argv = [sys.executable, "-m", "ppft_worker", "--connect", served.address, "-w", "2", "-s", SECRET]
        proc = cluster._spawn(argv, "dialin")
        wait_until(lambda: served.node.links, 30, "the dial-in workers to join")
        return proc

    try:
        yield start
    finally:
        cluster.close()


def _dialin_link(served: Served) -> Any:
    return served.node.links[0] if served.node.links else None


@pytest.mark.parametrize("where", ["dispatch", "reader"])
def test_dial_in_link_failure_closes_that_link_and_its_jobs_run_again(
    monkeypatch, serve, client, dialin, caplog, where
):
    served = serve(workers=0)  # the dial-in workers are the only ones
    if where == "dispatch":
        fault = inject(
            monkeypatch, link_module, "send_batch",
            when=lambda conn, bodies, inflight, tasks: _server_side_link(served, inflight),
        )  # fmt: skip
    else:

        def reading_for_the_link(stream: Stream) -> bool:
            link = _dialin_link(served)
            return link is not None and link.stream is stream and bool(link.inflight)

        fault = inject(monkeypatch, Stream, "_readable", when=reading_for_the_link)
    dialin(served)
    run_jobs(client(served))
    assert_logged_once(caplog, fault)
    wait_until(lambda: served.node.links, 30, "the dial-in workers to join again")
    assert_still_serving(served, client)


def _server_side_link(served: Served, inflight: dict[int, Any]) -> bool:
    link = _dialin_link(served)
    return link is not None and inflight is link.inflight
