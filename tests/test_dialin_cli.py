"""`ppft-worker` at the command line: what it says it is for, and when a dial-in worker gives up or leaves.

The command is run as users run it (`ppft-worker` from the venv's bin, and `python -m ppft_worker`), against
real ppservers on 127.0.0.1; every process is ended by its PID at teardown (the `cluster` fixture).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from clusterlib import ACCEPT_WORKERS, SECRET, Proc, free_port, wait_until

PPFT_WORKER = str(Path(sys.executable).with_name("ppft-worker"))


def run(*argv: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "PPFT_WORKER_SECRET"}
    env["PPFT_SECRET"] = SECRET
    return subprocess.run(
        argv, check=False, capture_output=True, text=True, timeout=timeout, env=env, stdin=subprocess.DEVNULL
    )


@pytest.mark.parametrize(
    "argv", [[PPFT_WORKER, "-h"], [PPFT_WORKER, "--help"], [sys.executable, "-m", "ppft_worker", "-h"]]
)
def test_help_says_what_it_is_for_and_shows_the_dial_in_use(argv):
    done = run(*argv)
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert out.startswith("usage: ppft-worker --connect HOST:PORT [-w N]")
    assert "Dial in to a ppserver and add this machine's worker processes to it" in out
    assert "ppft-worker --connect head:35000 -w 16" in out
    assert "--retry-for SECONDS" in out and "PPFT_SECRET" in out


def test_bare_command_shows_the_dial_in_use_and_fails():
    done = run(PPFT_WORKER)
    assert done.returncode == 2
    assert done.stdout == ""
    assert done.stderr.startswith("usage: ppft-worker --connect HOST:PORT")
    assert "ppft-worker --connect head:35000 -w 16" in done.stderr
    assert "error: --connect HOST:PORT is required (ppft-worker -h tells more)" in done.stderr
    assert "a ppft pool starts itself" in done.stderr  # the other use, which is not by hand


def test_unknown_option_is_named() -> None:
    done = run(PPFT_WORKER, "--connect", "head:35000", "--bogus")
    assert done.returncode == 2
    assert (
        "ppft-worker: error: unrecognized arguments: --bogus (ppft-worker -h lists the options)"
        in done.stderr
    )


@pytest.mark.parametrize(
    ("argv", "said"),
    [
        (["--connect", "head"], "--connect wants HOST:PORT (e.g. head:35000, [::1]:35000), got 'head'"),
        (["--connect", "head:99999"], "got 'head:99999'"),
        (
            ["--connect", "head:1", "-w", "0"],
            "argument -w/--workers: '0' is not a number of worker processes >= 1",
        ),
        (
            ["--connect", "head:1", "--retry-for", "soon"],
            "argument --retry-for: 'soon' is not a number of seconds",
        ),
    ],
)
def test_bad_arguments_say_what_was_wrong(argv, said):
    done = run(PPFT_WORKER, *argv)
    assert done.returncode == 2
    assert said in done.stderr, done.stderr


def test_unreachable_ppserver_is_retried_for_the_given_time_then_exit_1():
    port = free_port()  # nothing listens there
    start = time.monotonic()
    done = run(PPFT_WORKER, "--connect", f"127.0.0.1:{port}", "-w", "1", "--retry-for", "2")
    took = time.monotonic() - start
    assert done.returncode == 1, done.stderr
    assert 2 <= took < 30
    err = done.stderr
    assert (
        f"WARNING cannot reach ppserver 127.0.0.1:{port}: cannot connect: Connection refused; "
        "trying again for up to 2 s (--retry-for)" in err
    )
    assert err.count("WARNING") == 1, err  # the same failure is said once, not at every attempt
    assert (
        f"ERROR gave up on ppserver 127.0.0.1:{port} after 2 s: cannot connect: Connection refused; "
        "start the ppserver first" in err
    )
    assert "--retry-for SECONDS" in err


def test_retry_for_zero_gives_up_at_the_first_failure():
    port = free_port()
    done = run(PPFT_WORKER, "--connect", f"127.0.0.1:{port}", "--retry-for", "0")
    assert done.returncode == 1
    assert f"ERROR gave up on ppserver 127.0.0.1:{port}: cannot connect: Connection refused" in done.stderr


def test_dial_in_started_before_its_ppserver_joins_within_retry_time(cluster, make_client):
    port = free_port()
    early = cluster.dialin(Proc(popen=None, port=port), 1, extra=("--retry-for", "60"))  # type: ignore[arg-type]
    wait_until(lambda: "cannot reach ppserver" in cluster.read_log(early), 30, "the first refused attempt")
    node = cluster.ppserver(0, port=port, extra=ACCEPT_WORKERS)
    client = make_client(0, ppservers=(node.address,))
    assert client.submit(pow, (2, 10)).result(timeout=60) == 1024
    assert early.popen.poll() is None


def test_dial_in_leaves_with_status_0_when_its_ppserver_stops(cluster, make_client):
    node = cluster.ppserver(0, extra=ACCEPT_WORKERS)
    worker = cluster.dialin(node, 1)
    client = make_client(0, ppservers=(node.address,))
    assert client.submit(pow, (3, 2)).result(timeout=60) == 9
    cluster.kill(node, signal.SIGTERM)
    assert worker.popen.wait(30) == 0, cluster.read_log(worker)
    log = cluster.read_log(worker)
    assert f"INFO ppserver {node.address} stopped (ppserver got SIGTERM): leaving" in log, log
    assert "trying again" not in log


def test_lost_ppserver_is_waited_for_and_rejoined_when_it_comes_back(cluster, make_client):
    node = cluster.ppserver(0, extra=ACCEPT_WORKERS)
    worker = cluster.dialin(node, 1, extra=("--retry-for", "60"))
    wait_until(lambda: "serving ppserver" in cluster.read_log(worker), 30, "the dial-in to join")
    cluster.kill(node, signal.SIGKILL)
    wait_until(lambda: "lost ppserver" in cluster.read_log(worker), 30, "the dial-in to notice")
    again = cluster.ppserver(0, port=node.port, extra=ACCEPT_WORKERS)
    client = make_client(0, ppservers=(again.address,))
    assert client.submit(pow, (2, 5)).result(timeout=60) == 32
    assert worker.popen.poll() is None
    assert (
        f"WARNING lost ppserver {node.address}: the peer closed the connection without saying why"
        in cluster.read_log(worker)
    )


def test_wrong_secret_exits_1_at_once(cluster):
    node = cluster.ppserver(0, extra=ACCEPT_WORKERS)
    worker = cluster.dialin(node, 1, secret="not-the-secret", extra=("--retry-for", "600"))
    assert worker.popen.wait(30) == 1
    log = cluster.read_log(worker)
    assert f"ERROR ppserver {node.address}: wrong secret:" in log and "; not retrying" in log, log


def test_sigterm_while_retrying_leaves_at_once_with_status_0(cluster):
    port = free_port()
    worker = cluster.dialin(Proc(popen=None, port=port), 1, extra=("--retry-for", "forever"))  # type: ignore[arg-type]
    wait_until(
        lambda: "trying again without limit" in cluster.read_log(worker), 30, "the first refused attempt"
    )
    os.kill(worker.pid, signal.SIGTERM)
    assert worker.popen.wait(30) == 0
