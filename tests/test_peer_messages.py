"""What a client and a dial-in worker say when their ppserver goes away: once, and what really happened."""

from __future__ import annotations

import logging
import signal

import pytest

from clusterlib import ACCEPT_WORKERS, wait_until


def slow_add(x, seconds):
    import time

    time.sleep(seconds)
    return x + 1


def _lost_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.getMessage().startswith("lost ppserver")]


@pytest.mark.parametrize(
    ("sig", "said"),
    [
        (signal.SIGKILL, "the peer closed the connection without saying why (killed or crashed?)"),
        (signal.SIGTERM, "the peer closed the connection (ppserver got SIGTERM)"),
    ],
)
def test_client_says_once_why_its_ppserver_left(cluster, make_client, caplog, sig, said):
    caplog.set_level(logging.WARNING, logger="ppft")
    node = cluster.ppserver(1)
    client = make_client(0, ppservers=(node.address,))
    jobs = [client.submit(slow_add, (i, 0.2)) for i in range(20)]
    wait_until(lambda: any(j.done() for j in jobs), 30, "a first result from the ppserver")
    cluster.kill(node, sig)
    wait_until(lambda: bool(_lost_lines(caplog)), 30, "the client to notice the lost ppserver")
    (line,) = _lost_lines(caplog)
    assert said in line, line
    assert line.count("closed the connection") == 1, line


def test_dial_in_says_once_that_its_ppserver_was_killed(cluster):
    node = cluster.ppserver(0, extra=ACCEPT_WORKERS)
    worker = cluster.dialin(node, 1, extra=("--retry-for", "0"))
    wait_until(lambda: "serving ppserver" in cluster.read_log(worker), 30, "the dial-in to join")
    cluster.kill(node, signal.SIGKILL)
    assert worker.popen.wait(30) == 1
    log = cluster.read_log(worker)
    assert "the peer closed the connection without saying why (killed or crashed?)" in log, log
    assert log.count("closed the connection") == 1, log


def test_ppserver_says_once_that_a_client_left(cluster, make_client):
    node = cluster.ppserver(1, extra=("-d",))
    client = make_client(0, ppservers=(node.address,))
    assert client.submit(abs, (-2,)).result(timeout=60) == 2
    client.destroy()
    wait_until(
        lambda: "the client is done" in cluster.read_log(node), 30, "the ppserver to log the client leaving"
    )
    # the ppserver's own lines: a direct worker of the client, writing to the same log, says it in debug too
    lines = cluster.read_log(node).splitlines()
    (line,) = [x for x in lines if "the client is done" in x and " - ppft.server - " in x]
    assert line.endswith(
        "the peer closed the connection (the client is done: destroy() or the end of its program)"
    )
    assert line.count("closed the connection") == 1, line
