"""A dask.distributed cluster as a node: real `dask scheduler` and `dask worker` processes on 127.0.0.1.

The workers cannot import any package of this project (see dask_worker_without_ppft.py): what runs there
comes with each task. Local workers and the dask node share one queue; failures of the cluster map to ppft's.
"""

from __future__ import annotations

import io
import logging
import math
import os
import threading
import time
from contextlib import redirect_stderr, redirect_stdout

import pytest

pytest.importorskip("distributed")

import ppft
from clusterlib import children_of, free_port, wait_until
from dasklib import DaskCluster
from ppft_client.errors import RemoteTraceback, WorkerLostError
from scriptlib import run_script


def add_one(x):
    return x + 1


def slow_add(x, seconds):
    import time

    time.sleep(seconds)
    return x + 1


def can_import_ppft(_):
    try:
        import ppft_worker  # noqa: F401
    except ImportError as exc:
        return str(exc)
    return "imported"


def fails(x):
    raise ValueError(f"bad value {x}")


def chatty(x):
    import sys

    print(f"out {x}")
    print(f"err {x}", file=sys.stderr)
    return x


def die_on(x, bad):
    import os

    if x == bad:
        os._exit(3)
    return x + 1


def dask_nodes(server):
    return {name: n for name, n in server.get_active_nodes().items() if name.startswith("dask")}


@pytest.fixture(scope="module")
def shared(tmp_path_factory):
    """A scheduler and two workers for the tests that leave the cluster as they found it."""
    cluster = DaskCluster(tmp_path_factory.mktemp("dask"))
    try:
        cluster.add_workers(2)
        yield cluster
    finally:
        cluster.close()


@pytest.fixture
def own_cluster(tmp_path):
    clusters: list[DaskCluster] = []

    def make(**kwargs):
        cluster = DaskCluster(tmp_path, **kwargs)
        clusters.append(cluster)
        return cluster

    yield make
    for cluster in clusters:
        cluster.close()


@pytest.fixture
def make_server():
    servers: list[ppft.Server] = []

    def make(*args, **kwargs):
        server = ppft.Server(*args, **kwargs)
        servers.append(server)
        return server

    yield make
    for server in servers:
        server.destroy()


def test_seed_example_runs_on_workers_without_ppft(shared, make_server):
    job_server = make_server(0, ppservers=(shared.entry,))
    f1 = job_server.submit(math.sin, (math.pi / 2,), (), ("math",))
    assert f1.result(timeout=30) == 1.0
    assert "blocked on this dask worker" in job_server.submit(can_import_ppft, (0,)).result(timeout=30)
    out = io.StringIO()
    with redirect_stdout(out):
        job_server.print_stats()
    assert f"| {shared.entry}" in out.getvalue()
    assert job_server.get_stats()[shared.entry].njobs == 2
    assert job_server.get_active_nodes() == {"local": 0, shared.entry: 2}


def test_many_tiny_jobs_come_back_in_order(shared, make_server):
    server = make_server(0, ppservers=(shared.entry,))
    jobs = [server.submit(add_one, (i,)) for i in range(5000)]
    assert [j.result(timeout=60) for j in jobs] == list(range(1, 5001))
    assert server.get_stats()[shared.entry].njobs == 5000


def test_mixed_local_and_dask_share_the_queue(shared, make_server):
    server = make_server(1, ppservers=(shared.entry,))
    wait_until(lambda: dask_nodes(server) == {shared.entry: 2}, 15, "the dask node")
    jobs = [server.submit(slow_add, (i, 0.01)) for i in range(300)]
    assert [j.result(timeout=60) for j in jobs] == list(range(1, 301))
    stats = server.get_stats()
    assert stats["local"].njobs > 0 and stats[shared.entry].njobs > 0
    assert stats["local"].njobs + stats[shared.entry].njobs == 300


def test_exception_is_reraised_with_the_remote_traceback(shared, make_server):
    server = make_server(0, ppservers=(shared.entry,))
    job = server.submit(fails, (7,))
    with pytest.raises(ValueError, match="bad value 7") as info:
        job.result(timeout=30)
    assert isinstance(info.value.__cause__, RemoteTraceback)
    assert "in fails" in info.value.__cause__.tb
    assert job.node == shared.entry


def test_a_scripts_exceptions_arrive_as_they_do_from_local_workers(shared):
    """The dask runner pickles exceptions as the worker does (one code, kept the same in both files)."""
    local = run_script("exception_kinds.py").check().stdout
    through_dask = run_script("exception_kinds.py", env={"PPSERVER": shared.entry}).check().stdout
    assert ": failed: " not in through_dask
    assert through_dask == local


def test_captured_output_is_replayed(shared, make_server):
    server = make_server(0, ppservers=(shared.entry,))
    job = server.submit(chatty, (5,))
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        assert job.result(timeout=30) == 5
    assert (out.getvalue(), err.getvalue()) == ("out 5\n", "err 5\n")


def test_lambda_travels_pickled_and_modules_import_on_the_worker(shared, make_server):
    server = make_server(0, ppservers=(shared.entry,))
    job = server.submit(lambda x: zlib.crc32(x), (b"ppft",), modules=("zlib",))  # noqa: F821
    assert job.result(timeout=30) == __import__("zlib").crc32(b"ppft")


def test_a_time_limit_fails_the_job_and_its_thread_counts_busy_until_the_task_ends(shared, make_server):
    """dask cannot stop a running task: the job still fails at its deadline with JobTimeoutError, and the
    jobs after it wait for the thread the task holds rather than pile onto the cluster."""
    job_server = make_server(0, ppservers=(shared.entry,))
    assert job_server.submit(add_one, (1,)).result(timeout=60) == 2  # the node is up and its threads known
    start = time.monotonic()
    limited = job_server.submit(slow_add, (1, 3), timeout=1)
    with pytest.raises(ppft.JobTimeoutError, match=r"timeout of 1 s on dask://.*handed to dask"):
        limited.result(timeout=30)
    assert time.monotonic() - start < 2.5  # at its deadline, not when the 3 s task ends
    assert not limited.terminate()  # finished: nothing to stop
    others = [job_server.submit(add_one, (i,)) for i in range(3)]
    assert [job.result(timeout=60) for job in others] == [1, 2, 3]
    assert job_server.submit(add_one, (5,), timeout=30).result(timeout=60) == 6  # in time: its value


def test_local_cluster_object_is_used_and_left_running(make_server):
    from distributed import Client, LocalCluster

    with LocalCluster(n_workers=1, threads_per_worker=1, processes=False, dashboard_address=":0") as cluster:
        server = make_server(0, ppservers=(cluster,))
        name = "dask://" + cluster.scheduler_address.split("://", 1)[1]
        if not cluster.scheduler_address.startswith("tcp://"):
            name = "dask+" + cluster.scheduler_address
        jobs = [server.submit(add_one, (i,)) for i in range(100)]
        assert [j.result(timeout=30) for j in jobs] == list(range(1, 101))
        assert server.get_stats()[name].njobs == 100
        cluster.scale(2)  # the window follows the cluster's size
        wait_until(lambda: dask_nodes(server) == {name: 2}, 15, "the node to see 2 worker threads")
        server.destroy()
        assert cluster.status.name == "running"
        with Client(cluster, set_as_default=False) as client:
            assert client.submit(add_one, 1).result(timeout=30) == 2


def noisy(x):
    import time

    for i in range(5):
        print(f"job {x} line {i}")
        time.sleep(0.002)
    return x


def test_output_stays_with_its_job_on_a_threaded_worker(make_server):
    from distributed import LocalCluster

    with LocalCluster(n_workers=1, threads_per_worker=4, processes=False, dashboard_address=":0") as cluster:
        server = make_server(0, ppservers=(cluster,))
        jobs = [server.submit(noisy, (i,)) for i in range(40)]
        server.wait()  # the workers share this process: no redirect of sys.stdout while they print
        for i, job in enumerate(jobs):
            out = io.StringIO()
            with redirect_stdout(out):
                assert job.result(timeout=30) == i
            assert out.getvalue() == "".join(f"job {i} line {n}\n" for n in range(5))


def test_executor_maps_over_a_dask_cluster(shared):
    with ppft.Executor(0, ppservers=(shared.entry,)) as executor:
        assert list(executor.map(add_one, range(1000))) == list(range(1, 1001))


def test_adaptive_cluster_grows_from_zero_while_jobs_run(make_server):
    from distributed import LocalCluster

    with LocalCluster(n_workers=0, threads_per_worker=1, processes=False, dashboard_address=":0") as cluster:
        cluster.adapt(minimum=0, maximum=2, interval="100ms")
        server = make_server(0, ppservers=(cluster,))
        jobs = [server.submit(slow_add, (i, 0.2)) for i in range(30)]
        wait_until(lambda: 2 in dask_nodes(server).values(), 30, "the adaptive cluster to reach 2 workers")
        assert [j.result(timeout=60) for j in jobs] == list(range(1, 31))


def test_user_client_stays_open_after_destroy(shared, make_server):
    from distributed import Client

    with Client(shared.address, set_as_default=False) as client:
        server = make_server(0, ppservers=(client,))
        assert server.submit(add_one, (1,)).result(timeout=30) == 2
        assert server.get_stats()[shared.entry].njobs == 1
        server.destroy()
        assert client.status == "running"
        assert client.submit(lambda x: x + 1, 41).result(timeout=30) == 42


def test_destroy_leaves_no_process_thread_or_client_behind(shared):
    before = set(children_of(os.getpid()))
    server = ppft.Server(1, ppservers=(shared.entry,))
    try:
        wait_until(lambda: dask_nodes(server) == {shared.entry: 2}, 15, "the dask node")
        assert [j.result(timeout=30) for j in [server.submit(add_one, (i,)) for i in range(50)]] == list(
            range(1, 51)
        )
        node = server._scheduler.nodes[0]
    finally:
        server.destroy()
    assert not node._watcher.is_alive()
    assert node._client.status == "closed"
    assert not [t for t in threading.enumerate() if t.name.startswith("ppft-dask")]
    wait_until(lambda: set(children_of(os.getpid())) <= before, 10, "the local worker to exit")
    assert all(proc.popen.poll() is None for proc in [shared.scheduler, *shared.workers])


def test_sigkilled_dask_worker_every_result_right_exactly_once(own_cluster, make_server):
    cluster = own_cluster()
    first, _ = cluster.add_workers(2)
    server = make_server(0, ppservers=(cluster.entry,))
    calls: dict[int, int] = {}
    lock = threading.Lock()

    def count(i, value):
        with lock:
            calls[i] = calls.get(i, 0) + 1

    jobs = [server.submit(slow_add, (i, 0.05), callback=count, callbackargs=(i,)) for i in range(60)]
    wait_until(lambda: sum(calls.values()) >= 6, 30, "the first results")
    cluster.kill(first)
    assert [j.result(timeout=60) for j in jobs] == list(range(1, 61))
    server.wait()
    assert calls == dict.fromkeys(range(60), 1)
    wait_until(lambda: dask_nodes(server) == {cluster.entry: 1}, 15, "the window to shrink to 1 thread")


def test_sigkilled_scheduler_jobs_finish_locally(own_cluster, make_server, caplog):
    caplog.set_level(logging.WARNING, logger="ppft")
    cluster = own_cluster()
    cluster.add_workers(1)
    server = make_server(1, ppservers=(cluster.entry,))
    wait_until(lambda: dask_nodes(server) == {cluster.entry: 1}, 15, "the dask node")
    jobs = [server.submit(slow_add, (i, 0.05)) for i in range(60)]
    wait_until(lambda: server.get_stats()[cluster.entry].njobs >= 3, 30, "results through dask")
    cluster.kill(cluster.scheduler)
    assert [j.result(timeout=60) for j in jobs] == list(range(1, 61))
    stats = server.get_stats()
    assert stats["local"].njobs + stats[cluster.entry].njobs == 60
    assert cluster.entry in caplog.text
    assert not dask_nodes(server)


def test_killed_worker_fails_the_job_with_worker_lost_error(own_cluster, make_server):
    cluster = own_cluster(allowed_failures=0)  # dask gives up on a task the first time its worker dies
    cluster.add_workers(2)
    server = make_server(0, ppservers=(cluster.entry,))
    assert server.submit(die_on, (1, 13)).result(timeout=30) == 2
    with pytest.raises(WorkerLostError, match=f"{cluster.entry}.*KilledWorker"):
        server.submit(die_on, (13, 13)).result(timeout=60)
    assert server.submit(die_on, (2, 13)).result(timeout=30) == 3  # the other worker goes on


def test_unreachable_scheduler_is_logged_within_seconds(make_server, caplog):
    caplog.set_level(logging.WARNING, logger="ppft")
    entry = f"dask://127.0.0.1:{free_port()}"
    start = time.monotonic()
    server = make_server(1, ppservers=(entry,))
    wait_until(lambda: "connection refused" in caplog.text, 5, "the unreachable-scheduler warning")
    assert time.monotonic() - start < 3
    assert entry in caplog.text
    assert server.submit(add_one, (1,)).result(timeout=30) == 2  # local work goes on
    assert not dask_nodes(server)


def test_a_job_using_a_put_ref_fails_on_a_dask_node_naming_the_ref(shared, make_server):
    server = make_server(0, ppservers=(shared.entry,))
    ref = server.put([1, 2, 3])
    with pytest.raises(ppft.RefUnavailableError, match=rf"cannot hold put\(\) refs.*{ref.id:#x}"):
        server.submit(len, (ref,)).result(timeout=60)
    assert server.submit(add_one, (1,)).result(timeout=60) == 2
