"""The cluster: jobs on real ppserver subprocesses over loopback, and what happens when nodes fail."""

from __future__ import annotations

import io
import logging
import math
import re
import signal
import threading
import time
from contextlib import redirect_stdout

import pytest

import ppft
from clusterlib import SECRET, free_port, wait_until


def add_one(x):
    return x + 1


def slow_add(x, seconds):
    import time

    time.sleep(seconds)
    return x + 1


def where(_):
    import os
    import socket

    return socket.gethostname(), os.getpid()


def ready_nodes(server):
    return set(server.get_active_nodes()) - {"local"}


def test_seed_network_example(cluster, make_client):
    node = cluster.ppserver(2)
    job_server = make_client(0, ppservers=(node.address,))
    f1 = job_server.submit(math.sin, (math.pi / 2,), (), ("math",))
    assert f1.result(timeout=30) == 1.0
    out = io.StringIO()
    with redirect_stdout(out):
        job_server.print_stats()
    assert f"| {node.address}" in out.getvalue()
    assert job_server.get_stats()[node.address].njobs == 1
    assert job_server.get_active_nodes() == {"local": 0, node.address: 2}


def test_remote_only_runs_everything_remotely(cluster, make_client):
    node = cluster.ppserver(2)
    client = make_client(0, ppservers=(node.address,))
    jobs = [client.submit(add_one, (i,)) for i in range(5000)]
    assert [j.result(timeout=60) for j in jobs] == list(range(1, 5001))
    stats = client.get_stats()
    assert stats[node.address].njobs == 5000 and stats["local"].njobs == 0


def test_mixed_local_and_remote_share_the_queue(cluster, make_client):
    node = cluster.ppserver(2)
    client = make_client(1, ppservers=(node.address,))
    wait_until(lambda: ready_nodes(client) == {node.address}, 15, "the ppserver to be connected")
    jobs = [client.submit(slow_add, (i, 0.01)) for i in range(300)]
    assert [j.result(timeout=60) for j in jobs] == list(range(1, 301))
    stats = client.get_stats()
    assert stats["local"].njobs > 0 and stats[node.address].njobs > 0
    assert stats["local"].njobs + stats[node.address].njobs == 300


def test_sigkilled_ppserver_jobs_finish_elsewhere_exactly_once(cluster, make_client):
    a, b = cluster.ppserver(2), cluster.ppserver(2)
    client = make_client(0, ppservers=(a.address, b.address))
    wait_until(lambda: ready_nodes(client) == {a.address, b.address}, 15, "both ppservers")
    calls: dict[int, int] = {}
    lock = threading.Lock()

    def count(i, value):
        with lock:
            calls[i] = calls.get(i, 0) + 1

    jobs = [client.submit(slow_add, (i, 0.02), callback=count, callbackargs=(i,)) for i in range(400)]
    wait_until(lambda: sum(calls.values()) >= 50, 30, "the first results")
    cluster.kill(a)
    assert [j.result(timeout=60) for j in jobs] == list(range(1, 401))
    client.wait()
    assert calls == dict.fromkeys(range(400), 1)
    assert client.get_stats()[b.address].njobs > 0


def test_restarted_ppserver_on_the_same_port_is_used_again(cluster, make_client):
    node = cluster.ppserver(1)
    client = make_client(0, ppservers=(node.address,))
    assert client.submit(add_one, (1,)).result(timeout=30) == 2
    cluster.kill(node)
    node.popen.wait(10)
    wait_until(lambda: not ready_nodes(client), 15, "the client to notice the dead ppserver")
    pending = client.submit(add_one, (2,))  # waits: no node can run it right now
    again = cluster.ppserver(1, port=node.port)
    assert pending.result(timeout=30) == 3
    assert ready_nodes(client) == {again.address}


def test_wrong_secret_is_refused_quickly_and_runs_nothing(cluster, make_client, caplog, tmp_path):
    node = cluster.ppserver(1, secret="the-servers-secret")
    marker = tmp_path / "ran"
    caplog.set_level(logging.WARNING, logger="ppft")
    start = time.monotonic()
    client = make_client(0, ppservers=(node.address,), secret="another-secret")
    job = client.submit(open, (str(marker), "w"))
    wait_until(lambda: "wrong secret" in caplog.text, 5, "the wrong-secret warning")
    assert time.monotonic() - start < 5.0  # typically ~0.05 s; the bound only keeps a loaded CI honest
    assert node.address in caplog.text
    assert not ready_nodes(client)
    # no local workers, and the only node refused for good: the job fails with NoNodeError, runs nowhere
    assert isinstance(job.exception(timeout=10), ppft.NoNodeError) and not marker.exists()
    # the ppserver logs the refusal as its side of the connection ends, after the client was told
    refused = re.compile(r"refused connection from .*wrong secret")
    wait_until(lambda: refused.search(cluster.read_log(node)) is not None, 10, "the refusal in its log")


def test_unreachable_node_is_named_in_a_warning(make_client, caplog):
    caplog.set_level(logging.WARNING, logger="ppft")
    address = f"127.0.0.1:{free_port()}"
    client = make_client(1, ppservers=(address,))
    wait_until(lambda: "connection refused" in caplog.text, 5, "the refused warning")
    assert address in caplog.text
    assert client.submit(add_one, (1,)).result(timeout=30) == 2  # local work goes on


def test_silent_ppserver_is_detected_by_heartbeat(cluster, make_client):
    a, b = cluster.ppserver(1), cluster.ppserver(1)
    client = make_client(0, ppservers=(a.address, b.address), socket_timeout=2)
    wait_until(lambda: ready_nodes(client) == {a.address, b.address}, 15, "both ppservers")
    cluster.kill(a, signal.SIGSTOP)  # alive, socket open, but silent
    try:
        jobs = [client.submit(slow_add, (i, 0.01)) for i in range(100)]
        assert [j.result(timeout=60) for j in jobs] == list(range(1, 101))
    finally:
        cluster.kill(a, signal.SIGCONT)


def test_twenty_clients_on_one_ppserver(cluster):
    node = cluster.ppserver(2)
    results: dict[int, list[int]] = {}
    errors: list[BaseException] = []

    def client_run(k):
        try:
            with ppft.Server(0, ppservers=(node.address,), secret=SECRET) as client:
                jobs = [client.submit(add_one, (k * 1000 + i,)) for i in range(100)]
                results[k] = [j.result(timeout=120) for j in jobs]
        except Exception as exc:  # collected, then asserted on below
            errors.append(exc)

    threads = [threading.Thread(target=client_run, args=(k,)) for k in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(180)
    assert not errors
    assert results == {k: [k * 1000 + i + 1 for i in range(100)] for k in range(20)}


def test_ppserver_sigterm_requeues_at_once(cluster, make_client):
    a, b = cluster.ppserver(1), cluster.ppserver(1)
    client = make_client(0, ppservers=(a.address, b.address))
    wait_until(lambda: ready_nodes(client) == {a.address, b.address}, 15, "both ppservers")
    jobs = [client.submit(slow_add, (i, 0.05)) for i in range(40)]
    wait_until(lambda: sum(j.done() for j in jobs) >= 4, 30, "some results")
    cluster.kill(a, signal.SIGTERM)
    start = time.monotonic()
    assert [j.result(timeout=60) for j in jobs] == list(range(1, 41))
    assert time.monotonic() - start < 30
    assert a.popen.wait(10) == 0


def test_dial_in_workers_join_and_leave_mid_run(cluster, make_client):
    node = cluster.ppserver(0, extra=("--accept-workers",))  # no workers of its own: only dial-in capacity
    first = cluster.dialin(node, 1)
    client = make_client(0, ppservers=(node.address,))
    jobs = [client.submit(slow_add, (i, 0.01)) for i in range(300)]
    wait_until(lambda: sum(j.done() for j in jobs) >= 30, 60, "results through the first dial-in")
    second = cluster.dialin(node, 1)
    wait_until(lambda: sum(j.done() for j in jobs) >= 100, 60, "more results")
    cluster.kill(first, signal.SIGTERM)
    assert [j.result(timeout=120) for j in jobs] == list(range(1, 301))
    assert first.popen.wait(10) == 0
    assert second.popen.poll() is None


def kill_my_ppserver():
    """SIGKILL the ppserver whose worker runs this job (the worker's parent, or its fork server's: a direct
    worker, or a replacement, is a child of the ppserver's fork server), and never return: the worker dies
    with the ppserver (a direct worker's result would reach the client before that)."""
    import os
    import signal
    import time

    pid = os.getppid()
    with open(f"/proc/{pid}/cmdline", "rb") as f:
        if b"ppft_worker.process.forkserver" in f.read():
            with open(f"/proc/{pid}/stat") as stat:
                pid = int(stat.read().rsplit(")", 1)[1].split()[1])
    os.kill(pid, signal.SIGKILL)
    time.sleep(60)


def test_job_that_keeps_killing_its_nodes_fails_with_node_lost_error(cluster, make_client):
    nodes = [cluster.ppserver(1) for _ in range(3)]
    client = make_client(0, ppservers=tuple(n.address for n in nodes))
    wait_until(lambda: len(ready_nodes(client)) == 3, 15, "three ppservers")
    with pytest.raises(ppft.NodeLostError, match="lost node 3 times"):
        client.submit(kill_my_ppserver).result(timeout=60)


def test_dial_in_started_before_its_ppserver_joins_when_it_comes_up(cluster, make_client):
    port = free_port()
    from clusterlib import Proc

    early = cluster.dialin(Proc(popen=None, port=port), 1)  # type: ignore[arg-type]
    node = cluster.ppserver(0, port=port, extra=("--accept-workers",))
    client = make_client(0, ppservers=(node.address,))
    assert client.submit(add_one, (1,)).result(timeout=60) == 2
    assert early.popen.poll() is None
