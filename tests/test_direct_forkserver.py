"""A ppserver's direct workers forked by its fork server (docs/cluster.md, "Direct worker links"): against a
real ppserver and a real client, a direct worker is a child of the ppserver's fork server, not of the
ppserver, and is what an exec'd one is: its jobs, `put()` refs, counts, `terminate` (EndDirect), a departed
client and a stopping ppserver end it as before. Without a fork server (PPFT_START=exec) they are exec'd
again; a fork server killed with SIGKILL loses no job, and the links made after it use a new one; a stopped
or killed ppserver leaves no process behind."""

from __future__ import annotations

import os
import re
import signal
import time
from typing import Any

import pytest

from clusterlib import Cluster, Proc, children_of, pid_alive, wait_until
from statuslib import metrics, ppserver_with_page, status

pytestmark = pytest.mark.skipif(not hasattr(os, "pidfd_open"), reason="no fork server without pidfds")

DEBUG = ("-d",)  # the ppserver logs each direct worker's pid, how it started, and how it ended


def _where(x: int) -> tuple[int, int]:
    import os

    return x + 1, os.getpid()


def _total_where(numbers: list[int]) -> tuple[int, int]:
    import os

    return sum(numbers), os.getpid()


def _marked(mark: str, seconds: float) -> int:
    import os
    import time

    with open(mark, "w") as f:
        f.write(str(os.getpid()))
    time.sleep(seconds)
    return os.getpid()


def _parent(pid: int) -> int:
    with open(f"/proc/{pid}/stat") as f:
        return int(f.read().rsplit(")", 1)[1].split()[1])


def _cmdline(pid: int) -> str:
    with open(f"/proc/{pid}/cmdline", "rb") as f:
        return f.read().replace(b"\0", b" ").decode()


def _direct_pids(node: Any) -> set[int]:
    """The pids of the node's direct workers, as each said in its NodeInfo ("host:pid")."""
    return {int(link.info.name.rsplit(":", 1)[1]) for link in list(node.direct.ready)}


def _linked(make_client: Any, ppserver: Proc, links: int = 2) -> tuple[Any, Any, set[int]]:
    """A client of `ppserver` with its `links` direct links up: (client, node, the direct workers' pids)."""
    client = make_client(0, ppservers=(ppserver.address,))
    wait_until(lambda: bool(client._scheduler.nodes), 10, "the node")
    node = client._scheduler.nodes[0]
    wait_until(lambda: len(node.direct.ready) == links, 30, "the direct links")
    return client, node, _direct_pids(node)


def _forked_links(make_client: Any, ppserver: Proc, links: int = 2) -> tuple[Any, Any, set[int], int]:
    """`_linked`, with direct workers forked by the ppserver's fork server (a client whose links were made
    before it was ready, exec'd, is destroyed and another one made): (client, node, pids, fork server)."""
    deadline = time.monotonic() + 30
    while True:
        client, node, pids = _linked(make_client, ppserver, links)
        parents = {_parent(pid) for pid in pids}
        if len(parents) == 1 and ppserver.pid not in parents:
            (forkserver,) = parents
            return client, node, pids, forkserver
        assert time.monotonic() < deadline, f"no direct worker forked by a fork server (parents {parents})"
        client.destroy()
        time.sleep(0.1)


def test_direct_workers_are_children_of_the_ppservers_fork_server(
    cluster: Cluster, make_client: Any, stray_pids
):
    node_proc, url = ppserver_with_page(cluster, 2, extra=DEBUG)
    client, _, pids, forkserver = _forked_links(make_client, node_proc)
    stray_pids.extend([*pids, forkserver])
    assert forkserver in children_of(node_proc.pid)
    assert "ppft_worker.process.forkserver" in _cmdline(forkserver)
    assert not pids & set(children_of(node_proc.pid))
    ran = [job() for job in [client.submit(_where, (i,)) for i in range(100)]]
    assert [value for value, _ in ran] == list(range(1, 101)) and {pid for _, pid in ran} <= pids
    ref = client.put(list(range(1000)))  # passed on to the forked workers on their ref pipes
    total, pid = client.submit(_total_where, (ref,))()
    assert (total, pid in pids) == (499500, True)
    wait_until(lambda: status(url)["jobs"]["ok"] == 101, 10, "the ppserver to count the jobs they reported")
    page = status(url)
    assert page["direct"]["running"] == 2 and {row["pid"] for row in page["direct"]["workers"]} == pids
    assert metrics(url)[("ppft_jobs_total", (("outcome", "ok"),))] == 101
    log = cluster.read_log(node_proc)
    for pid in pids:
        assert re.search(rf"direct worker pid {pid} serves this connection \(forked by the fork server;", log)
    client.destroy()
    wait_until(lambda: not any(pid_alive(pid) for pid in pids), 15, "the direct workers to exit")
    wait_until(lambda: status(url)["direct"]["running"] == 0, 10, "the ppserver to reap them")
    assert pid_alive(forkserver), "the fork server serves on"
    assert "WARNING" not in cluster.read_log(node_proc)


@pytest.mark.parametrize("how", ["forkserver", "exec"])
def test_terminate_and_a_departed_client_kill_a_direct_worker(
    cluster: Cluster, make_client: Any, stray_pids, tmp_path: Any, how: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`terminate` of a running direct job (EndDirect) kills its worker, and so does its client leaving, a
    forked one (its exit as the fork server reported it) as an exec'd one (PPFT_START=exec: no fork server),
    with the same log lines."""
    if how == "exec":
        monkeypatch.setenv("PPFT_START", "exec")
    ppserver = cluster.ppserver(2, extra=DEBUG)
    if how == "exec":
        client, node, pids = _linked(make_client, ppserver)
        assert {_parent(pid) for pid in pids} == {ppserver.pid}
        assert not any("ppft_worker.process.forkserver" in _cmdline(kid) for kid in children_of(ppserver.pid))
    else:
        client, node, pids, forkserver = _forked_links(make_client, ppserver)
        stray_pids.append(forkserver)
    stray_pids.extend(pids)
    mark = tmp_path / "started"
    running = client.submit(_marked, (str(mark), 60))
    wait_until(lambda: mark.exists() and mark.read_text() != "", 30, "the job to start")
    victim = int(mark.read_text())
    assert victim in pids
    assert running.terminate()
    wait_until(lambda: not pid_alive(victim), 10, "the terminated job's direct worker to be killed")
    ended = f"direct worker pid {victim} of 127.0.0.1:"
    wait_until(lambda: "was killed by signal 9 (SIGKILL)" in _lines(cluster, ppserver, ended), 10, "its end")
    assert "EndDirect" in _lines(cluster, ppserver, f"stopping direct worker pid {victim} ")
    wait_until(lambda: len(node.direct.ready) == 2, 30, "the direct link made again")
    mark.unlink()
    client.submit(_marked, (str(mark), 60))
    wait_until(lambda: mark.exists() and mark.read_text() != "", 30, "another job to start")
    busy = int(mark.read_text())
    stray_pids.append(busy)
    client.destroy()  # its direct workers see EOF; the busy one reads nothing: the ppserver kills it
    wait_until(lambda: not pid_alive(busy), 15, "the direct worker of the client that left to be killed")
    assert "WARNING" not in cluster.read_log(ppserver)


def _lines(cluster: Cluster, proc: Proc, text: str) -> str:
    """The lines of `proc`'s log that hold `text`."""
    return "\n".join(line for line in cluster.read_log(proc).splitlines() if text in line)


def _sleepy(x: int) -> int:
    import time

    time.sleep(0.02)
    return x


def test_a_fork_server_killed_with_sigkill_loses_no_job(
    cluster: Cluster, make_client: Any, stray_pids
) -> None:
    """Its direct workers die with it (PR_SET_PDEATHSIG); their jobs run again, each result arrives once; the
    ppserver serves on, starts a new fork server as the links are asked for again, and forks them from it."""
    ppserver = cluster.ppserver(2, extra=DEBUG)
    client, node, pids, forkserver = _forked_links(make_client, ppserver)
    stray_pids.extend([*pids, forkserver])
    seen: list[int] = []
    jobs = [client.submit(_sleepy, (i,), callback=seen.append) for i in range(300)]
    wait_until(lambda: len(seen) >= 20, 30, "the first results")
    os.kill(forkserver, signal.SIGKILL)
    assert [job() for job in jobs] == list(range(300))
    client.wait()
    assert sorted(seen) == list(range(300)), "every result arrived exactly once"
    wait_until(lambda: not any(pid_alive(pid) for pid in pids), 10, "its direct workers to die with it")
    assert ppserver.popen.poll() is None
    wait_until(lambda: len(node.direct.ready) == 2, 30, "the direct links made again")
    again = _direct_pids(node)
    stray_pids.extend(again)
    (new_server,) = {_parent(pid) for pid in again}
    stray_pids.append(new_server)
    assert new_server != forkserver and new_server in children_of(ppserver.pid)
    assert "ppft_worker.process.forkserver" in _cmdline(new_server)
    ran = [job() for job in [client.submit(_where, (i,)) for i in range(20)]]
    assert [value for value, _ in ran] == list(range(1, 21)) and {pid for _, pid in ran} <= again


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL])
def test_a_stopped_ppserver_leaves_no_process_behind(
    cluster: Cluster, make_client: Any, stray_pids, tmp_path: Any, sig: int
) -> None:
    """Stopped (SIGTERM: it kills and reaps its direct workers, then its pool and fork server) or killed
    (SIGKILL: the fork server dies with it, their direct workers with the fork server): no process is left,
    checked by pid, a direct worker in the middle of a job included."""
    ppserver = cluster.ppserver(2, extra=DEBUG)
    client, _, pids, forkserver = _forked_links(make_client, ppserver)
    workers = [kid for kid in children_of(ppserver.pid) if kid != forkserver]
    everyone = [*pids, forkserver, *workers]
    stray_pids.extend(everyone)
    mark = tmp_path / "started"
    client.submit(_marked, (str(mark), 60))
    wait_until(lambda: mark.exists() and mark.read_text() != "", 30, "the job to start")
    os.kill(ppserver.pid, sig)
    code = ppserver.popen.wait(20)
    assert code == (0 if sig == signal.SIGTERM else -signal.SIGKILL), cluster.read_log(ppserver)
    wait_until(lambda: not any(pid_alive(pid) for pid in everyone), 10, f"processes {everyone} to end")
    if sig == signal.SIGTERM:
        assert "stopping direct worker pid" in cluster.read_log(ppserver)


def _parents() -> tuple[int, int]:
    import os

    return os.getpid(), os.getppid()


@pytest.mark.parametrize("restart", [False, True])
def test_the_pool_shares_its_fork_server_for_its_replacements_unless_it_restarts_its_workers(
    cluster: Cluster, make_client: Any, stray_pids, restart: bool
) -> None:
    """The ppserver's pool forks a worker that replaces a dead one through the fork server it shares with the
    direct workers; with -r (a fresh exec'd worker for each job) it does not."""
    ppserver = cluster.ppserver(1, extra=(*DEBUG, "-r") if restart else DEBUG)
    client, _, pids, forkserver = _forked_links(make_client, ppserver, links=1)
    stray_pids.extend([*pids, forkserver])

    def through_the_pool() -> tuple[int, int]:  # a time limit keeps a job off the direct links
        pid, parent = client.submit(_parents, timeout=30)()
        stray_pids.append(pid)
        assert pid not in pids
        return pid, parent

    first, parent = through_the_pool()
    assert parent == ppserver.pid
    if restart:
        later = [through_the_pool() for _ in range(3)]
        assert {parent for _, parent in later} == {ppserver.pid} and first not in {pid for pid, _ in later}
        return
    os.kill(first, signal.SIGKILL)
    deadline = time.monotonic() + 30
    while (replacement := through_the_pool())[0] == first:
        assert time.monotonic() < deadline, "the pool's worker was not replaced"
    assert replacement[1] == forkserver


def test_a_client_that_connects_as_the_ppserver_starts_has_its_direct_workers_forked(
    cluster: Cluster, make_client: Any, stray_pids
) -> None:
    """The fork server starts with the ppserver; a direct link asked for before it is ready waits for it (up
    to `FORKSERVER_WAIT`, 2 s) rather than exec its worker."""
    ppserver = cluster.ppserver(2, extra=DEBUG)  # returns once it listens
    _, _, pids = _linked(make_client, ppserver)
    stray_pids.extend(pids)
    (forkserver,) = {_parent(pid) for pid in pids}
    assert forkserver != ppserver.pid and "ppft_worker.process.forkserver" in _cmdline(forkserver)
    assert "exec'd" not in _lines(cluster, ppserver, "serves this connection")
