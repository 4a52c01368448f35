"""One failing callback in a client's I/O thread closes only what it belongs to; the thread and jobs go on.

For each owner of loop callbacks in a client (the local pool, a ppserver link, auto-discovery, a dask node)
and each kind of callback it registers (reader, writer, timer, handed-over `call_soon_threadsafe`, `run_here`
and the idle dispatch), a fault is injected once. Each test checks that every job still gets its right value,
that the failure was logged once with its traceback, and that the I/O thread is alive and serving.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

import ppft
from clusterlib import SECRET, Cluster, wait_until
from faultlib import assert_logged_once, inject
from ppft_client.nodes.dask import DaskNode
from ppft_client.nodes.discovery import Discovery
from ppft_worker.pool import WorkerPool
from ppft_worker.runtime import link as link_module
from ppft_worker.runtime.dialer import Dial
from ppft_worker.runtime.resolver import Resolution
from ppft_worker.runtime.stream import Stream

TIMEOUT = 60


def add_one(x):
    return x + 1


def slow_add(x, seconds):
    import time

    time.sleep(seconds)
    return x + 1


@pytest.fixture(autouse=True)
def _logs(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="ppft")


@pytest.fixture
def make_server() -> Iterator[Callable[..., ppft.Server]]:
    servers: list[ppft.Server] = []

    def make(*args: Any, **kwargs: Any) -> ppft.Server:
        kwargs.setdefault("secret", SECRET)
        server = ppft.Server(*args, **kwargs)
        servers.append(server)
        return server

    yield make
    for server in servers:
        server.destroy()


def assert_serving(server: ppft.Server, remote: str | None = None) -> None:
    """The I/O thread lives and runs new jobs (on `remote`, when given)."""
    scheduler = server._scheduler
    assert scheduler._thread.is_alive() and scheduler.broken is None
    jobs = [server.submit(add_one, (i,)) for i in range(10)]
    assert [job.result(timeout=TIMEOUT) for job in jobs] == list(range(1, 11))
    if remote is not None:
        wait_until(lambda: remote in server.get_active_nodes(), 30, f"{remote} to be used again")


# -- the local pool ------------------------------------------------------------------------------------


def test_pool_reader_failure_kills_that_worker_only_and_its_jobs_run_again(monkeypatch, make_server, caplog):
    fault = inject(monkeypatch, WorkerPool, "_readable", when=lambda pool, w: w.ready and bool(w.inflight))
    server = make_server(2)
    jobs = [server.submit(slow_add, (i, 0.05)) for i in range(20)]
    assert [job.result(timeout=TIMEOUT) for job in jobs] == list(range(1, 21))
    assert_logged_once(caplog, fault)
    assert "was killed after internal error in the I/O thread (InjectedFault" in caplog.text
    wait_until(lambda: server._scheduler.pool.workers == 2, 30, "a replacement worker")
    assert_serving(server)


def test_pool_writer_failure_kills_that_worker_only_and_its_job_runs_again(monkeypatch, make_server, caplog):
    fault = inject(monkeypatch, WorkerPool, "_writable")
    server = make_server(2)
    payload = b"x" * (8 << 20)  # far more than a pipe holds: the rest waits for the writer callback
    assert server.submit(len, (payload,)).result(timeout=TIMEOUT) == len(payload)
    assert_logged_once(caplog, fault)
    assert_serving(server)


def test_pool_timer_failure_is_rearmed_and_retired_workers_are_still_reaped(monkeypatch, make_server, caplog):
    fault = inject(monkeypatch, WorkerPool, "_reap")
    server = make_server(2)
    assert server.submit(add_one, (1,)).result(timeout=TIMEOUT) == 2
    server.set_ncpus(1)
    pool = server._scheduler.pool
    wait_until(lambda: fault.raised == 1, 30, "the reap timer to fire")
    wait_until(lambda: not pool._dying, 30, "the retired worker to be reaped all the same")
    assert_logged_once(caplog, fault)
    assert_serving(server)


def test_pool_start_handed_to_the_io_thread_failing_is_retried(monkeypatch, make_server, caplog):
    fault = inject(monkeypatch, WorkerPool, "start")
    made: list[ppft.Server] = []
    # from a thread other than the main one, the workers are started by the I/O thread (call_soon_threadsafe)
    thread = threading.Thread(target=lambda: made.append(make_server(2)))
    thread.start()
    thread.join(TIMEOUT)
    server = made[0]
    assert server.submit(add_one, (1,)).result(timeout=TIMEOUT) == 2
    assert_logged_once(caplog, fault)
    assert_serving(server)


def _asleep(server: ppft.Server) -> None:
    wait_until(lambda: server._scheduler.loop._sleeping, 30, "the I/O thread to sleep")


def test_dispatch_failure_run_here_on_the_submitting_thread_loses_no_job(monkeypatch, make_server, caplog):
    server = make_server(2)
    assert server.submit(add_one, (0,)).result(timeout=TIMEOUT) == 1
    on_caller: list[bool] = []

    def on_this_thread(pool: WorkerPool, w: Any, tasks: Any) -> bool:
        on_caller.append(threading.current_thread() is threading.main_thread())
        return True

    fault = inject(monkeypatch, WorkerPool, "_send", when=on_this_thread)
    _asleep(server)
    job = server.submit(add_one, (41,))  # the I/O thread sleeps: this thread dispatches it (run_here)
    assert job.result(timeout=TIMEOUT) == 42
    assert on_caller[0], "the fault did not fire in run_here"
    assert_logged_once(caplog, fault)
    assert_serving(server)


def test_dispatch_failure_in_the_idle_callback_loses_no_job(monkeypatch, make_server, caplog):
    on_io_thread = lambda *a: threading.current_thread().name == "ppft-io"  # noqa: E731
    fault = inject(monkeypatch, WorkerPool, "_send", when=on_io_thread)
    server = make_server(2)
    jobs = server._submit_all(add_one, [(i,) for i in range(500)])  # queued at once: the I/O thread sends
    results = [job.result(timeout=TIMEOUT) for job in jobs]
    assert results == list(range(1, 501))
    assert_logged_once(caplog, fault)
    assert_serving(server)


# -- a ppserver link ---------------------------------------------------------------------------------------


@pytest.fixture
def node(cluster: Cluster):  # type: ignore[no-untyped-def]
    return cluster.ppserver(2)


def _client_side(stream: Stream) -> bool:
    return stream.peer.startswith("ppserver ")


def _remote_busy(stream: Stream) -> bool:
    owner = getattr(stream._on_event, "__self__", None)
    return _client_side(stream) and owner is not None and owner.inflight > 0


def _run_remote(server: ppft.Server, n: int = 20, seconds: float = 0.05) -> None:
    jobs = [server.submit(slow_add, (i, seconds)) for i in range(n)]
    assert [job.result(timeout=TIMEOUT) for job in jobs] == list(range(1, n + 1))


def test_remote_reader_failure_closes_that_link_and_its_jobs_rerun(monkeypatch, node, make_server, caplog):
    fault = inject(monkeypatch, Stream, "_readable", when=_remote_busy)
    server = make_server(0, ppservers=(node.address,))
    _run_remote(server)
    assert_logged_once(caplog, fault)
    assert f"lost ppserver {node.address} with" in caplog.text
    assert "internal error in the I/O thread" in caplog.text
    assert_serving(server, node.address)


def test_remote_writer_failure_closes_that_link_and_its_job_reruns(monkeypatch, node, make_server, caplog):
    fault = inject(monkeypatch, Stream, "_writable", when=_client_side)
    server = make_server(0, ppservers=(node.address,))
    payload = b"x" * (32 << 20)  # more than a socket buffer: the rest waits for the writer callback
    assert server.submit(len, (payload,)).result(timeout=TIMEOUT) == len(payload)
    assert_logged_once(caplog, fault)
    assert_serving(server, node.address)


def test_remote_heartbeat_timer_failure_closes_that_link_only(monkeypatch, node, make_server, caplog):
    fault = inject(monkeypatch, Stream, "_tick", when=_client_side)
    server = make_server(0, ppservers=(node.address,))
    assert server.submit(slow_add, (1, 1.5)).result(timeout=TIMEOUT) == 2  # outlives the first heartbeat
    assert_logged_once(caplog, fault)
    assert_serving(server, node.address)


def test_remote_connect_writer_failure_is_a_failed_attempt_retried(monkeypatch, node, make_server, caplog):
    fault = inject(monkeypatch, Dial, "_writable")
    server = make_server(0, ppservers=(node.address,))
    assert server.submit(add_one, (1,)).result(timeout=TIMEOUT) == 2
    assert_logged_once(caplog, fault)
    assert_serving(server, node.address)


def test_remote_resolution_answer_failure_is_a_failed_attempt_retried(monkeypatch, node, make_server, caplog):
    fault = inject(monkeypatch, Resolution, "_answer")  # handed to the loop by call_soon_threadsafe
    server = make_server(0, ppservers=(f"localhost:{node.port}",))
    assert server.submit(add_one, (1,)).result(timeout=TIMEOUT) == 2
    assert_logged_once(caplog, fault)
    assert_serving(server, f"localhost:{node.port}")


def test_remote_dispatch_failure_closes_that_link_and_loses_no_job(monkeypatch, node, make_server, caplog):
    fault = inject(monkeypatch, link_module, "send_batch")
    server = make_server(0, ppservers=(node.address,))
    _run_remote(server)
    assert_logged_once(caplog, fault)
    assert_serving(server, node.address)


def test_a_name_that_breaks_the_resolver_fails_that_node_only(monkeypatch, node, make_server, caplog):
    """The resolver raising what no resolver should (UnicodeError, as idna does for some names) is that
    node's reason; the other node runs the jobs."""
    import socket

    real = socket.getaddrinfo

    def getaddrinfo(host: str, *args: Any, **kwargs: Any) -> Any:
        if host == "breaks.example":
            raise UnicodeError("encoding with 'idna' codec failed (UnicodeError: label empty or too long)")
        return real(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    server = make_server(0, ppservers=("breaks.example:1", node.address))
    _run_remote(server)
    # the name fails on a resolver thread, independently of the jobs that the other node runs
    said = "ppserver breaks.example:1 cannot be used: cannot resolve host 'breaks.example'"
    wait_until(lambda: said in caplog.text, 30, "the node's failure in the log")
    assert_serving(server, node.address)


# -- auto-discovery ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["_readable", "_send"])
def test_discovery_failure_reopens_its_socket_and_still_finds_the_server(
    monkeypatch, cluster, make_server, caplog, method
):
    fault = inject(monkeypatch, Discovery, method)
    node = cluster.ppserver(2, extra=("-a", "-b", "127.255.255.255"))
    server = make_server(0, ppservers=(f"*:{node.port}",))
    wait_until(lambda: node.address in server.get_active_nodes(), 30, "the announced ppserver")
    assert_logged_once(caplog, fault)
    assert "auto-discovery socket closed after internal error" in caplog.text
    assert_serving(server, node.address)


# -- a dask node ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def dask_cluster(tmp_path_factory):  # type: ignore[no-untyped-def]
    from dasklib import DaskCluster

    cluster = DaskCluster(tmp_path_factory.mktemp("dask"))
    try:
        cluster.add_workers(2)
        yield cluster
    finally:
        cluster.close()


@pytest.mark.parametrize(
    "method",
    ["_finished", "_submit", "_running"],  # a batch's outcome, a dispatch, the watcher's news (call_soon)
)
def test_dask_node_failure_takes_it_down_once_and_its_jobs_run(
    monkeypatch, dask_cluster, make_server, caplog, method
):
    fault = inject(monkeypatch, DaskNode, method)
    server = make_server(0, ppservers=(dask_cluster.entry,))
    jobs = [server.submit(add_one, (i,)) for i in range(50)]
    assert [job.result(timeout=TIMEOUT) for job in jobs] == list(range(1, 51))
    assert_logged_once(caplog, fault)
    assert_serving(server, dask_cluster.entry)


# -- the slow resolver ------------------------------------------------------------------------------------


def test_a_slow_name_resolution_stalls_nothing_jobs_flow_on_the_other_node(monkeypatch, node, make_server):
    import socket

    real = socket.getaddrinfo
    release = threading.Event()
    asked = threading.Event()

    def getaddrinfo(host: str, *args: Any, **kwargs: Any) -> Any:
        if host == "slow.example":
            asked.set()
            release.wait(TIMEOUT)  # a DNS server that takes its time
            raise socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution")
        return real(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    try:
        server = make_server(0, ppservers=("slow.example:1", node.address))
        assert asked.wait(TIMEOUT)
        started = time.monotonic()
        _run_remote(server, n=40, seconds=0.0)  # all of it while slow.example is still being resolved
        assert not release.is_set()
        assert time.monotonic() - started < TIMEOUT
        assert node.address in server.get_active_nodes()
    finally:
        release.set()


def test_localhost_reaches_a_ppserver_listening_on_ipv4_only_whatever_the_resolver_says_first(
    monkeypatch, node, make_server
):
    import socket

    real = socket.getaddrinfo

    def getaddrinfo(host: str, port: Any, *args: Any, **kwargs: Any) -> Any:
        if host == "localhost":  # as on systems whose hosts file lists ::1 first
            six = (socket.AF_INET6, socket.SOCK_STREAM, 6, "", ("::1", int(port), 0, 0))
            four = (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", int(port)))
            return [six, four]
        return real(host, port, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    server = make_server(0, ppservers=(f"localhost:{node.port}",))
    assert server.submit(add_one, (1,)).result(timeout=TIMEOUT) == 2
    assert f"localhost:{node.port}" in server.get_active_nodes()


def test_a_dying_worker_is_not_waited_for_on_the_io_thread(make_server):
    """A worker that closes its pipes but lingers: the I/O thread keeps answering meanwhile (it used to
    wait up to a second in `proc.wait(1.0)`)."""
    server = make_server(2)
    loop = server._scheduler.loop
    assert server.submit(add_one, (0,)).result(timeout=TIMEOUT) == 1
    job = server.submit(_close_pipes_and_linger, (3.0,))
    gaps: list[float] = []
    stop = threading.Event()

    def ping() -> None:  # how long the I/O thread takes to run a handed-over callback
        while not stop.is_set():
            done = threading.Event()
            sent = time.monotonic()
            loop.call_soon_threadsafe(done.set)
            done.wait(10)
            gaps.append(time.monotonic() - sent)
            time.sleep(0.005)

    pinger = threading.Thread(target=ping)
    pinger.start()
    try:
        with pytest.raises(ppft.WorkerLostError):
            job.result(timeout=TIMEOUT)
    finally:
        stop.set()
        pinger.join(10)
    assert max(gaps) < 0.5, f"the I/O thread stalled {max(gaps):.2f} s"
    assert_serving(server)


def _close_pipes_and_linger(seconds):
    import os
    import time

    os.closerange(3, 4096)  # the worker's pipes to the pool: the pool sees the end of its pipe
    time.sleep(seconds)
    return "never seen"


def test_emfile_while_connecting_is_a_failed_attempt_and_the_node_is_retried(
    monkeypatch, node, make_server, caplog
):
    import errno
    import socket

    from ppft_worker.runtime import dialer

    real = socket.socket
    refusals = [3]

    def no_more_files(*args: Any, **kwargs: Any) -> socket.socket:
        if refusals[0]:
            refusals[0] -= 1
            raise OSError(errno.EMFILE, "Too many open files")
        return real(*args, **kwargs)

    monkeypatch.setattr(dialer.socket, "socket", no_more_files)
    server = make_server(0, ppservers=(node.address,))
    assert server.submit(add_one, (1,)).result(timeout=TIMEOUT) == 2
    assert "cannot open a socket (Too many open files)" in caplog.text
    assert_serving(server, node.address)
