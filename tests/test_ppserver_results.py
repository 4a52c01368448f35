"""Results through a ppserver: its workers' result frames go on to the clients undecoded
(ppft_protocol.relay), under each client's own job ids. Values, errors and captured output arrive as a local
pool gives them, each result exactly once, also when clients' ids collide and when a worker dies mid-batch."""

from __future__ import annotations

import io
import re
import threading
from collections.abc import Callable
from contextlib import redirect_stdout
from pathlib import Path

import pytest

import ppft
from clusterlib import Cluster, wait_until
from ppft_client import RemoteTraceback, WorkerLostError

MakeClient = Callable[..., ppft.Server]


def add_one(x: int) -> int:
    return x + 1


def divide(a: int, b: int) -> float:
    return a / b


def talk(x: int) -> int:
    print("job", x, "says hello \u2603")
    return x


def die_once(marker: str, x: int) -> int:
    """Kill this worker the first time a job numbered 500 or more runs (marker file absent): by then the
    client's burst fills whole frames, so the worker dies with others in flight; return `x` when run again."""
    import os
    import signal

    if x >= 500 and not os.path.exists(marker):
        open(marker, "w").close()
        os.kill(os.getpid(), signal.SIGKILL)
    return x


def always_die() -> None:
    import os

    os._exit(7)


def connected(client: ppft.Server, address: str) -> None:
    wait_until(lambda: address in client.get_active_nodes(), 15, f"the ppserver {address} to be connected")


def test_values_errors_and_output_come_back_as_a_local_pool_gives_them(
    cluster: Cluster, make_client: MakeClient
) -> None:
    node = cluster.ppserver(2)
    client = make_client(0, ppservers=(node.address,))
    values = [client.submit(add_one, (i,)) for i in range(500)]
    failing = client.submit(divide, (1, 0))
    talking = client.submit(talk, (7,))
    assert [job.result(timeout=60) for job in values] == list(range(1, 501))
    with pytest.raises(ZeroDivisionError) as info:
        failing.result(timeout=60)
    assert isinstance(info.value.__cause__, RemoteTraceback)
    assert "divide" in info.value.__cause__.tb
    talking.wait(60)
    out = io.StringIO()
    with redirect_stdout(out):
        assert talking() == 7
    assert out.getvalue() == "job 7 says hello \u2603\n"


def test_clients_with_the_same_job_ids_each_get_their_own_results(
    cluster: Cluster, make_client: MakeClient
) -> None:
    node = cluster.ppserver(2)
    clients = [make_client(0, ppservers=(node.address,)) for _ in range(3)]
    for client in clients:
        connected(client, node.address)
    got: dict[int, list[int]] = {}

    def run(index: int) -> None:
        jobs = [clients[index].submit(add_one, (1000 * index + i,)) for i in range(3000)]
        got[index] = [job.result(timeout=60) for job in jobs]

    threads = [threading.Thread(target=run, args=(index,)) for index in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(90)
    assert got == {index: [1000 * index + i + 1 for i in range(3000)] for index in range(3)}


def test_jobs_of_a_worker_killed_mid_batch_finish_exactly_once(
    cluster: Cluster, make_client: MakeClient, tmp_path: Path
) -> None:
    # the ppserver's pool runs the jobs: a direct link, up within ms, would take them (test_direct_links.py)
    node = cluster.ppserver(1, extra=("--direct-workers", "0"))
    client = make_client(0, ppservers=(node.address,))
    calls: dict[int, int] = {}
    lock = threading.Lock()

    def count(value: int) -> None:
        with lock:
            calls[value] = calls.get(value, 0) + 1

    marker = tmp_path / "marker"
    marker.touch()  # while it exists, die_once returns at once: the ppserver learns the function is tiny
    warm = [client.submit(die_once, (str(marker), i)) for i in range(300)]
    assert [job.result(timeout=60) for job in warm] == list(range(300))
    marker.unlink()  # the first die_once from job 500 on kills its worker, with the rest of its frame
    jobs = [client.submit(die_once, (str(marker), i), callback=count) for i in range(1000)]
    assert [job.result(timeout=60) for job in jobs] == list(range(1000))
    client.wait()
    assert calls == dict.fromkeys(range(1000), 1)
    lost = re.search(r"with (\d+) job\(s\) in flight", cluster.read_log(node))
    assert lost is not None and int(lost.group(1)) > 1  # the worker died with a frame's worth of jobs


def test_job_that_keeps_killing_its_ppserver_worker_fails_alone(
    cluster: Cluster, make_client: MakeClient
) -> None:
    node = cluster.ppserver(1)
    client = make_client(0, ppservers=(node.address,))
    bad = client.submit(always_die)
    goods = [client.submit(add_one, (i,)) for i in range(50)]
    with pytest.raises(WorkerLostError, match=r"exited with code 7"):
        bad.result(timeout=60)
    assert [good.result(timeout=60) for good in goods] == list(range(1, 51))
