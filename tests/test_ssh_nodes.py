"""ssh nodes against a real OpenSSH server on 127.0.0.1 (`sshlib`): jobs run on the remote pool, the
scheduler sees the node like any other, and nothing of ours stays on the remote machine after the client."""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
import time
from collections import Counter

import pytest

import ppft
from clusterlib import Cluster, children_of, pid_alive, wait_until
from sshlib import Sshd, cmdline
from sshlib import sshd as sshd  # noqa: PLC0414 - the fixture

pytestmark = pytest.mark.timeout(180)


def whoami(x):
    import os

    return x, os.getpid(), os.getppid()


def slow_square(x):
    import time

    time.sleep(0.05)
    return x * x


def nap(seconds):
    import time

    time.sleep(seconds)
    return seconds


def ssh_node(client: ppft.Server):  # type: ignore[no-untyped-def]
    (node,) = [node for node in client._scheduler.nodes if node.name.startswith("ssh://")]
    return node


def no_ppft_left(sshd: Sshd) -> bool:
    return not [pid for pid in sshd.processes() if "ppft" in cmdline(pid)]


def our_ssh_processes() -> list[int]:
    return [pid for pid in children_of(os.getpid()) if cmdline(pid).startswith("ssh ")]


def test_jobs_run_on_the_remote_pool_behind_one_ssh_channel(sshd: Sshd, make_client) -> None:  # type: ignore[no-untyped-def]
    client = make_client(0, ppservers=(sshd.entry(workers=2),), ssh=sshd.prefix())
    jobs = [client.submit(whoami, (i,)) for i in range(40)]
    results = [job.result(timeout=60) for job in jobs]
    assert [x for x, _, _ in results] == list(range(40))
    (stdio,) = sshd.stdio_pids()  # one channel, one remote side
    assert {parent for _, _, parent in results} == {stdio}  # every job ran on a worker of that process
    workers = {pid for _, pid, _ in results}
    assert workers <= set(children_of(stdio)) and workers
    assert stdio in sshd.processes()  # the remote side runs under sshd, not under us
    name = f"ssh://{sshd.user}@127.0.0.1"
    assert client.get_active_nodes() == {"local": 0, name: 2}
    assert client.get_stats()[name].njobs == 40
    assert ssh_node(client).sealed is False  # ssh encrypts the channel: both ends agreed to no second layer


def test_print_stats_lists_the_ssh_node(sshd: Sshd, make_client, capsys) -> None:  # type: ignore[no-untyped-def]
    client = make_client(0, ppservers=(sshd.entry(workers=1),), ssh=sshd.prefix())
    assert client.submit(whoami, (1,)).result(timeout=60)[0] == 1
    client.print_stats()
    out = capsys.readouterr().out
    assert f"| ssh://{sshd.user}@127.0.0.1\n" in out
    assert "1 cores (0 local, 1 on 1 remote node)" in out


def test_seal_yes_seals_the_channel_too(sshd: Sshd, make_client) -> None:  # type: ignore[no-untyped-def]
    client = make_client(0, ppservers=(sshd.entry(workers=1, seal="yes"),), ssh=sshd.prefix())
    assert client.submit(whoami, (1,)).result(timeout=60)[0] == 1
    node = ssh_node(client)
    assert node.sealed is True and node.cipher in ("aes-256-gcm", "chacha20-poly1305")


def test_mixed_with_local_workers_and_a_ppserver(sshd: Sshd, cluster: Cluster, make_client) -> None:  # type: ignore[no-untyped-def]
    server = cluster.ppserver(1)
    client = make_client(1, ppservers=(server.address, sshd.entry(workers=1)), ssh=sshd.prefix())
    wait_until(lambda: len(client.get_active_nodes()) == 3, 60, "the ppserver and the ssh node to connect")
    jobs = [client.submit(slow_square, (i,)) for i in range(60)]
    assert [job.result(timeout=120) for job in jobs] == [i * i for i in range(60)]
    stats = client.get_stats()
    assert stats[f"ssh://{sshd.user}@127.0.0.1"].njobs > 0
    assert stats[server.address].njobs > 0
    assert sum(stat.njobs for stat in stats.values()) == 60


def test_connect1_and_the_executor_take_ssh_nodes(sshd: Sshd, make_client) -> None:  # type: ignore[no-untyped-def]
    client = make_client(0, ssh=sshd.prefix())
    client.connect1(sshd.entry(workers=1))
    assert client.submit(whoami, (7,)).result(timeout=60)[0] == 7
    with ppft.Executor(0, ppservers=(sshd.entry(workers=1),), ssh=sshd.prefix()) as executor:
        assert list(executor.map(slow_square, range(5))) == [0, 1, 4, 9, 16]


def test_a_host_alias_of_the_users_ssh_config(sshd: Sshd, make_client, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """The default command, plain `ssh`, reads the user's config: here a PATH whose ssh reads the test's."""
    monkeypatch.setenv("PATH", sshd.env()["PATH"])
    client = make_client(0, ppservers=(f"ssh://ppft-test-node?python={sys.executable}&workers=1",))
    assert client.submit(whoami, (3,)).result(timeout=60)[0] == 3
    assert "ssh://ppft-test-node" in client.get_active_nodes()


def test_destroy_leaves_nothing_running_on_the_remote(sshd: Sshd, make_client) -> None:  # type: ignore[no-untyped-def]
    client = make_client(0, ppservers=(sshd.entry(workers=2),), ssh=sshd.prefix())
    assert client.submit(whoami, (1,)).result(timeout=60)[0] == 1
    (stdio,) = sshd.stdio_pids()
    workers = children_of(stdio)
    assert len(workers) == 2
    ssh_pid = ssh_node(client).ssh_pid
    assert ssh_pid is not None and pid_alive(ssh_pid)
    client.destroy()
    assert not pid_alive(ssh_pid)  # destroy() waited for ssh: the remote side had stopped by then
    wait_until(lambda: no_ppft_left(sshd), 15, f"nothing of ppft under sshd (left: {sshd.ours()})")
    assert not any(pid_alive(pid) for pid in [stdio, *workers])
    assert not our_ssh_processes()


def test_destroy_while_jobs_run_stops_the_remote_jobs_too(sshd: Sshd, make_client) -> None:  # type: ignore[no-untyped-def]
    client = make_client(0, ppservers=(sshd.entry(workers=2),), ssh=sshd.prefix())
    jobs = [client.submit(nap, (30,)) for _ in range(4)]
    wait_until(lambda: any(children_of(pid) for pid in sshd.stdio_pids()), 60, "the remote pool")
    wait_until(lambda: ssh_node(client).inflight > 0, 60, "jobs in flight on the ssh node")
    started = time.monotonic()
    client.destroy()
    assert time.monotonic() - started < 10
    for job in jobs:
        with pytest.raises(ppft.DestroyedServerError):
            job.result(timeout=5)
    wait_until(lambda: no_ppft_left(sshd), 15, f"nothing of ppft under sshd (left: {sshd.ours()})")


def test_destroy_ends_several_ssh_nodes_together(sshd: Sshd, make_client) -> None:  # type: ignore[no-untyped-def]
    """Each node is told first, then all are waited for at once: destroy takes one node's time, not three."""
    names = (f"{sshd.user}@127.0.0.1", "127.0.0.1", "localhost")
    entries = tuple(f"ssh://{name}?python={sys.executable}&workers=1" for name in names)
    client = make_client(0, ppservers=entries, ssh=sshd.prefix())
    jobs = [client.submit(nap, (30,)) for _ in range(6)]
    wait_until(lambda: len(sshd.stdio_pids()) == 3, 60, "three remote sides")
    wait_until(lambda: len(client.get_active_nodes()) == 4, 60, "three ssh nodes connected")
    started = time.monotonic()
    client.destroy()
    assert time.monotonic() - started < 5
    assert all(job.done() for job in jobs)
    wait_until(lambda: no_ppft_left(sshd), 15, f"nothing of ppft under sshd (left: {sshd.ours()})")
    assert not our_ssh_processes()


@pytest.mark.parametrize("kill", ["remote side", "ssh"])
def test_a_channel_killed_mid_run_reruns_its_jobs_exactly_once(sshd: Sshd, make_client, kill: str) -> None:  # type: ignore[no-untyped-def]
    client = make_client(0, ppservers=(sshd.entry(workers=2),), ssh=sshd.prefix())
    seen: Counter[int] = Counter()
    lock = threading.Lock()

    def done(value: int) -> None:
        with lock:
            seen[value] += 1

    jobs = [client.submit(slow_square, (i,), callback=done) for i in range(80)]
    name = f"ssh://{sshd.user}@127.0.0.1"
    wait_until(lambda: name in client.get_stats() and client.get_stats()[name].njobs >= 10, 60, "results")
    (first,) = sshd.stdio_pids()
    if kill == "ssh":
        ssh_pid = ssh_node(client).ssh_pid
        assert ssh_pid is not None
        os.kill(ssh_pid, signal.SIGKILL)
    else:
        os.kill(first, signal.SIGKILL)
    assert [job.result(timeout=120) for job in jobs] == [i * i for i in range(80)]
    client.wait()
    with lock:
        assert seen == Counter({i * i: 1 for i in range(80)})  # every callback once: no result twice
    # the old remote side ends as sshd sees its connection gone, independently of the jobs run again
    wait_until(lambda: first not in sshd.stdio_pids(), 15, "the killed channel's remote side to end")
    assert len(sshd.stdio_pids()) == 1  # the node reconnected: a new remote side took the rest


def test_a_remote_side_that_goes_silent_is_given_up_by_heartbeat(sshd: Sshd, make_client) -> None:  # type: ignore[no-untyped-def]
    """SIGSTOP: the channel stays open but nothing answers; after the silence timeout its jobs run again."""
    client = make_client(0, ppservers=(sshd.entry(workers=1),), ssh=sshd.prefix(), socket_timeout=2)
    assert client.submit(whoami, (0,)).result(timeout=60)[0] == 0
    (stopped,) = sshd.stdio_pids()
    os.kill(stopped, signal.SIGSTOP)
    try:
        job = client.submit(whoami, (1,))
        value, _, parent = job.result(timeout=60)
        assert value == 1 and parent != stopped
    finally:
        if pid_alive(stopped):
            os.kill(stopped, signal.SIGCONT)


def test_what_the_remote_writes_on_stderr_becomes_log_lines(sshd: Sshd, make_client, caplog) -> None:  # type: ignore[no-untyped-def]
    """A job writing straight to fds 1 and 2 (bypassing the output capture), and a child process of the job
    printing, cannot corrupt the channel: the text arrives as the node's log lines, escaped."""

    def stray(x):
        import os
        import subprocess

        os.write(1, b"stray on fd 1\n")
        os.write(2, b"stray on fd 2 \x1b[31mred\n")
        subprocess.run(["echo", "stray from a child"], check=True)
        return x

    caplog.set_level(logging.WARNING, logger="ppft.ssh")
    client = make_client(0, ppservers=(sshd.entry(workers=1),), ssh=sshd.prefix())
    assert [client.submit(stray, (i,)).result(timeout=60) for i in range(3)] == [0, 1, 2]
    name = f"ssh://{sshd.user}@127.0.0.1"
    wait_until(lambda: "stray from a child" in caplog.text, 15, "the child's line in the client's log")
    messages = [record.getMessage() for record in caplog.records if record.name == "ppft.ssh"]
    assert f"{name}: stray on fd 1" in messages
    assert f"{name}: stray on fd 2 \\x1b[31mred" in messages  # escaped: no terminal escape gets through


def test_pathos_parallel_pool_through_an_ssh_node(sshd: Sshd, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """pathos #170: tunnelling ppft through ssh by hand, no more. pathos compares the servers it asked for
    with `Server.ppservers` to decide whether to make a new Server: an ssh node is listed as its entry."""
    pools = pytest.importorskip("pathos.pools", reason="pathos is installed by scripts/install --test")
    monkeypatch.setenv("PATH", sshd.env()["PATH"])
    entry = f"ssh://ppft-test-node?python={sys.executable}&workers=2"
    pool = pools.ParallelPool(ncpus=0, servers=(entry,))
    try:
        assert pool.map(slow_square, range(6)) == [x * x for x in range(6)]
        server = pools.ParallelPool.__state__[pool._id]
        assert server.ppservers == [(entry,)]
        assert pool.map(slow_square, range(3)) == [0, 1, 4]
        assert pools.ParallelPool.__state__[pool._id] is server  # the same Server, the same channel
        assert len(sshd.stdio_pids()) == 1
        assert server.get_stats()["ssh://ppft-test-node"].njobs == 9
    finally:
        pool.clear()
    wait_until(lambda: no_ppft_left(sshd), 15, f"nothing of ppft under sshd (left: {sshd.ours()})")
