"""Direct worker links (docs/cluster.md, "Direct worker links"): a client's jobs go straight to a real
ppserver's worker processes, over connections of their own. A user's script run as a file, with -c and from
stdin; the jobs seen running in the direct workers; a direct worker killed in the middle of a job, which
loses nothing; a job that kills its direct worker, which fails alone with WorkerLostError; a ppserver that
offers no direct links, and one of ppft 2.0.0, where every job goes through the ppserver as before."""

from __future__ import annotations

import logging
import os
import signal
from typing import Any

import pytest

from clusterlib import Cluster, children_of, pid_alive, wait_until
from scriptlib import HOWS, run_script


def _printed(ran: Any) -> dict[str, str]:
    return dict(line.split(": ", 1) for line in ran.stdout.splitlines() if ": " in line)


@pytest.mark.parametrize("how", HOWS)
def test_a_script_runs_its_jobs_on_direct_links(module_ppserver: Any, how: str) -> None:
    ran = run_script("direct_jobs.py", how=how, env={"PPSERVER": module_ppserver.address}).check()
    printed = _printed(ran)
    expected = {
        "direct links": "2",
        "values": "True",
        "limited": "2",
        "ref": "499500",
        "terminate": "True True",
        "cancelled": "True",
        "after": "1 True",
        "again": "2",
        "stats": "203",  # 200 + limited + ref + after: the terminated job is not counted
    }
    assert {key: printed.get(key) for key in expected} == expected, ran.stdout + ran.stderr
    assert 1 <= len(printed["pids"].split()) <= 2


def _node(client: Any) -> Any:
    wait_until(lambda: bool(client._scheduler.nodes), 10, "the node")
    return client._scheduler.nodes[0]


def _direct_pids(node: Any) -> set[int]:
    """The pids of the node's direct workers, as each said in its NodeInfo ("host:pid")."""
    return {int(link.info.name.rsplit(":", 1)[1]) for link in list(node.direct.ready)}


def _twenty_run(client: Any) -> bool:
    """Whether 20 jobs return what they should."""
    return [value for value, _ in (job() for job in [client.submit(_pid, (i,)) for i in range(20)])] == list(
        range(20)
    )


def _ran_in(client: Any) -> set[int]:
    """The pids of the processes 20 jobs ran in."""
    return {pid for _, pid in (job() for job in [client.submit(_pid, (i,)) for i in range(20)])}


def _pid(x: int) -> tuple[int, int]:
    import os

    return x, os.getpid()


def _pid_after(mark: str, seconds: float) -> int:
    import os
    import time

    with open(mark, "w") as f:
        f.write(str(os.getpid()))
    time.sleep(seconds)
    return os.getpid()


def test_jobs_run_in_the_ppservers_direct_workers(module_ppserver: Any, make_client: Any) -> None:
    client = make_client(0, ppservers=(module_ppserver.address,))
    node = _node(client)
    wait_until(lambda: len(node.direct.ready) == 2, 30, "two direct links")
    direct = _direct_pids(node)
    kids = children_of(module_ppserver.pid)  # exec'd direct workers, or its fork server: forked ones' parent
    ours = {*kids, *(pid for kid in kids for pid in children_of(kid))}
    assert direct <= ours, "a direct worker is a process of the ppserver, or of its fork server"
    ran_in = {pid for _, pid in (job() for job in [client.submit(_pid, (i,)) for i in range(100)])}
    assert ran_in <= direct
    assert client.status()["nodes"][0]["direct_links"] == 2


def test_a_direct_worker_killed_in_a_job_loses_nothing(
    module_ppserver: Any, make_client: Any, tmp_path: Any
) -> None:
    client = make_client(0, ppservers=(module_ppserver.address,))
    node = _node(client)
    wait_until(lambda: len(node.direct.ready) == 2, 30, "two direct links")
    mark = tmp_path / "pid"
    job = client.submit(_pid_after, (str(mark), 3.0))
    wait_until(lambda: mark.exists() and mark.read_text() != "", 30, "the job to start")
    victim = int(mark.read_text())
    assert victim in _direct_pids(node)
    mark.unlink()
    os.kill(victim, signal.SIGKILL)
    assert job() != victim  # it ran again, elsewhere, and returned
    wait_until(lambda: len(node.direct.ready) == 2, 30, "the direct link made again")
    assert victim not in _direct_pids(node)
    assert [value for value, _ in (j() for j in [client.submit(_pid, (i,)) for i in range(20)])] == list(
        range(20)
    )


def _wait_for(go: str, mark: str = "") -> int:
    """Say where it runs (in `mark`), wait for the file `go` (30 s at most); its pid."""
    import os
    import time

    if mark:
        with open(mark, "a") as f:
            f.write(f"{os.getpid()}\n")
    end = time.monotonic() + 30
    while not os.path.exists(go) and time.monotonic() < end:
        time.sleep(0.01)
    return os.getpid()


def _kill_myself(mark: str, go: str) -> None:
    """`_wait_for(go, mark)`, then SIGKILL its own process."""
    import os
    import signal

    _wait_for(go, mark)
    os.kill(os.getpid(), signal.SIGKILL)


def test_a_job_that_kills_its_direct_worker_fails_alone_with_worker_lost_error(
    module_ppserver: Any, make_client: Any, tmp_path: Any
) -> None:
    """As in a pool: the job a dead direct worker was running is the suspect. It runs on through the
    ppserver, whose pool runs it alone and fails it with WorkerLostError saying how its worker died; the jobs
    queued behind it on the same direct link are charged nothing and all return."""
    from ppft import NodeLostError, WorkerLostError

    client = make_client(0, ppservers=(module_ppserver.address,))
    node = _node(client)
    wait_until(lambda: len(node.direct.ready) == 2, 30, "two direct links")
    direct = _direct_pids(node)
    # Each link learns how long _pid runs (`Batching`: a function it has not seen yet goes one job at a time),
    # so that the link the killer goes to sends a batch of them behind it, whichever link that is.
    wait_until(lambda: _ran_in(client) == direct, 30, "_pid to run on both direct workers")
    mark, opened, go = tmp_path / "pids", tmp_path / "opened", tmp_path / "go"
    gates = [client.submit(_wait_for, (str(opened),)) for _ in range(2)]  # one on each direct link
    wait_until(lambda: all(len(link.inflight) == 1 for link in node.direct.ready), 30, "both links busy")
    others = [client.submit(_pid, (i,)) for i in range(100)]  # queued with the killer, which is sent with
    killer = client.submit(_kill_myself, (str(mark), str(go)), depfuncs=(_wait_for,))  # the jobs around it
    others += [client.submit(_pid, (i,)) for i in range(100, 300)]
    opened.touch()
    assert {gate.result(timeout=60) for gate in gates} == direct
    wait_until(mark.exists, 30, "the killer to start")

    def behind_it() -> bool:
        held = [list(link.inflight.values()) for link in node.direct.ready]
        return any(killer in tasks and tasks[-1] is not killer for tasks in held)

    wait_until(behind_it, 30, "jobs sent behind the killer on its direct link")
    go.touch()
    with pytest.raises(WorkerLostError, match=r"killed by signal 9|SIGKILL") as raised:
        killer.result(timeout=60)
    assert not isinstance(raised.value, NodeLostError)
    assert [job.result(timeout=60)[0] for job in others] == list(range(300))
    assert [job for job in others if job.node_losses] == []  # not charged as losses of the node
    ran_in = [int(line) for line in mark.read_text().split()]
    assert [pid in direct for pid in ran_in][:1] == [True], ran_in  # it ran direct first ...
    assert not any(pid in direct for pid in ran_in[1:]), (ran_in, direct)  # ... and never direct again
    assert len(ran_in) >= 2  # the ppserver's pool ran it before it failed
    wait_until(lambda: len(node.direct.ready) == 2, 30, "the direct link made again")
    assert _twenty_run(client)


def test_a_ppserver_that_offers_none_runs_every_job(
    cluster: Cluster, make_client: Any, caplog: pytest.LogCaptureFixture
) -> None:
    server = cluster.ppserver(workers=2, extra=("--direct-workers", "0"))
    caplog.set_level(logging.INFO, logger="ppft.remote")
    client = make_client(0, ppservers=(server.address,))
    node = _node(client)
    wait_until(lambda: "no direct link" in caplog.text, 30, "the refusal")
    assert "direct link refused" in caplog.text
    assert [value for value, _ in (j() for j in [client.submit(_pid, (i,)) for i in range(20)])] == list(
        range(20)
    )
    assert not node.direct.ready and client.status()["nodes"][0]["direct_links"] == 0


def test_a_ppft_2_0_0_ppserver_runs_every_job(protocol_1_ppserver: dict[str, str], make_client: Any) -> None:
    client = make_client(0, ppservers=(protocol_1_ppserver["PPSERVER"],))
    node = _node(client)
    assert [value for value, _ in (j() for j in [client.submit(_pid, (i,)) for i in range(20)])] == list(
        range(20)
    )
    # nothing to wait for: a link of version 1 never asks for direct links
    assert not node.direct.links and not node.direct.ready


def test_a_direct_worker_of_a_finished_client_is_gone(module_ppserver: Any, make_client: Any) -> None:
    client = make_client(0, ppservers=(module_ppserver.address,))
    node = _node(client)
    wait_until(lambda: len(node.direct.ready) == 2, 30, "two direct links")
    direct = _direct_pids(node)
    client.destroy()
    wait_until(lambda: not any(pid_alive(pid) for pid in direct), 15, "the direct workers to exit")


def _meet(folder: str, me: int, other: int) -> bool:
    """Mark that job `me` runs, then wait (10 s at most) for job `other` to run too: True if it did, which
    only two jobs running side by side can do."""
    import os
    import time

    open(os.path.join(folder, str(me)), "w").close()
    end = time.monotonic() + 10
    while not os.path.exists(os.path.join(folder, str(other))):
        if time.monotonic() > end:
            return False
        time.sleep(0.005)
    return True


@pytest.mark.parametrize("direct_workers", [2, 1])
def test_two_jobs_run_side_by_side(
    cluster: Cluster, make_client: Any, tmp_path: Any, direct_workers: int
) -> None:
    """Two direct links: the second job goes to the idle one, not behind the first. One direct link of two
    workers: the second job goes through the ppserver, to its idle worker."""
    server = cluster.ppserver(workers=2, extra=("--direct-workers", str(direct_workers)))
    client = make_client(0, ppservers=(server.address,))
    node = _node(client)
    wait_until(lambda: len(node.direct.ready) == direct_workers, 30, "the direct links")
    assert _twenty_run(client)  # the function is known to every worker, and fast
    for round_ in range(3):
        folder = tmp_path / str(round_)
        folder.mkdir()
        jobs = [client.submit(_meet, (str(folder), me, 1 - me)) for me in (0, 1)]
        assert [job() for job in jobs] == [True, True]
