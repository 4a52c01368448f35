"""The worker process (`python -S -m ppft_worker`), driven over its real pipes as a WorkerPool drives it: its
handshake and how it runs jobs (how it ends, and the bodies it keeps: test_process_ends.py)."""

from __future__ import annotations

import os
import pickle
import select
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
from workerpipe import PLUS_ONE, SECRET, TIMEOUT, Driver, body, jobs, values

import ppft_worker
from ppft_protocol import (
    AuthenticationError,
    Bye,
    Cancel,
    Established,
    FunctionBody,
    StatsReply,
    StatsRequest,
)
from ppft_protocol.framing import encode_frame_header
from ppft_protocol.messages import encode_message

# -- the handshake --------------------------------------------------------------------------------------


def test_handshake_ends_with_node_info(spawn: Callable[..., subprocess.Popen[bytes]]) -> None:
    proc = spawn()
    info = Driver(proc).handshake()
    assert info.kind == "worker"
    assert info.workers == 1
    assert info.version == ppft_worker.__version__
    assert info.name == f"{os.uname().nodename}:{proc.pid}"


def test_pipe_is_authenticated_but_not_sealed(spawn: Callable[..., subprocess.Popen[bytes]]) -> None:
    driver = Driver(spawn())
    driver.handshake()
    established = [e for e in driver.events if isinstance(e, Established)]
    assert len(established) == 1
    assert established[0].sealed is False


def test_wrong_secret_runs_nothing(spawn: Callable[..., subprocess.Popen[bytes]], tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    proc = spawn(secret=SECRET, stderr=subprocess.PIPE)
    driver = Driver(proc, secret=b"not the worker's secret")
    touch = body(f"def f(x):\n    open({str(marker)!r}, 'w').close()\n    return x\n")
    # Frames a careless client might push right behind its (wrong) proof: the worker must never run them.
    smuggled = b"".join(
        encode_frame_header(m.TYPE, sum(len(p) for p in encode_message(m))) + b"".join(encode_message(m))
        for m in (touch, jobs(touch, [(1,)]))
    )
    driver.pump(lambda: driver.conn.state.value == "await-auth-ok", what="the client's proof")
    driver.out += smuggled
    with pytest.raises(AuthenticationError, match="refused"):
        driver.pump(lambda: False, what="AuthFailed")
    assert proc.wait(TIMEOUT) == 2
    assert proc.stderr is not None
    assert b"ppft.worker" in proc.stderr.read()
    assert not marker.exists()


# -- running jobs ---------------------------------------------------------------------------------------


def test_thousand_tiny_jobs_all_answered_right(worker: Driver) -> None:
    worker.send(PLUS_ONE, jobs(PLUS_ONE, [(i,) for i in range(1000)]))
    results = worker.wait_results(1000)
    assert sorted(results) == list(range(1, 1001))
    assert values(results) == {i + 1: i + 1 for i in range(1000)}


def test_results_travel_in_batches(worker: Driver) -> None:
    worker.send(PLUS_ONE, jobs(PLUS_ONE, [(i,) for i in range(1000)]))
    worker.wait_results(1000)
    assert worker.result_frames <= 100, f"{worker.result_frames} frames for 1000 results"


def test_jobs_run_in_arrival_order(worker: Driver) -> None:
    clock = body("import time\ndef f(x):\n    return (x, time.perf_counter_ns())\n")
    worker.send(clock, jobs(clock, [(i,) for i in range(50)]))
    got = values(worker.wait_results(50))
    stamps = [got[i + 1][1] for i in range(50)]  # type: ignore[index]
    assert stamps == sorted(stamps)


def test_lone_result_goes_back_at_once(worker: Driver) -> None:
    """A result goes back when nothing is left to run, not after a batch fills."""
    worker.send(PLUS_ONE, jobs(PLUS_ONE, [(41,)]))
    assert values(worker.wait_results(1)) == {1: 42}
    assert worker.result_frames == 1


def blocking_body(started_w: int, release_r: int) -> FunctionBody:
    """A job that says it started, then waits for the test to release it (no sleeps, no timing)."""
    return body(f"import os\ndef f():\n    os.write({started_w}, b's')\n    return os.read({release_r}, 1)\n")


def job_started(started_r: int) -> bool:
    return bool(select.select([started_r], [], [], 0)[0])


def test_results_are_not_held_behind_a_slow_job(spawn: Callable[..., subprocess.Popen[bytes]]) -> None:
    started_r, started_w = os.pipe()
    release_r, release_w = os.pipe()
    try:
        driver = Driver(spawn(pass_fds=(started_w, release_r)))
        driver.handshake()
        block = blocking_body(started_w, release_r)
        driver.send(PLUS_ONE, jobs(PLUS_ONE, [(i,) for i in range(1, 4)]), block, jobs(block, [()], 4))
        driver.pump(lambda: job_started(started_r), what="job 4 to start", wake=(started_r,))
        results = driver.wait_results(3)  # while job 4 is still running
        assert values(results) == {1: 2, 2: 3, 3: 4}
        os.write(release_w, b"r")
        assert pickle.loads(driver.wait_results(4)[4].value) == b"r"
    finally:
        for fd in (started_r, started_w, release_r, release_w):
            os.close(fd)


def test_large_args_and_result_cross_the_pipes_intact(worker: Driver) -> None:
    echo = body("def f(data):\n    return data[::-1]\n")
    payload = os.urandom(1 << 24)
    worker.send(echo, jobs(echo, [(payload,)]))
    assert values(worker.wait_results(1)) == {1: payload[::-1]}


def test_writes_to_fd_1_and_print_do_not_corrupt_the_channel(
    spawn: Callable[..., subprocess.Popen[bytes]], tmp_path: Path
) -> None:
    log = tmp_path / "stderr"
    with open(log, "wb") as err:
        driver = Driver(spawn(stderr=err.fileno()))
    driver.handshake()
    noisy = body(
        """
        import os
        def f(x):
            os.write(1, b"garbage-on-fd-1")
            os.write(2, b"garbage-on-fd-2")
            print("printed", x)
            return x * 2
        """
    )
    driver.send(noisy, jobs(noisy, [(i,) for i in range(5)]), PLUS_ONE, jobs(PLUS_ONE, [(1,)], first_id=6))
    results = driver.wait_results(6)
    assert values(results) == {1: 0, 2: 2, 3: 4, 4: 6, 5: 8, 6: 2}
    driver.send(Bye())
    driver.flush()
    assert driver.proc.wait(TIMEOUT) == 0
    # The raw writes went to the log (fd 1 is a copy of fd 2), or into the job's captured output.
    seen = log.read_bytes() + "".join(r.output for r in results.values()).encode()
    assert seen.count(b"garbage-on-fd-1") == 5
    assert "printed 3" in results[4].output or b"printed 3" in log.read_bytes()


def test_job_cannot_read_the_channel_from_stdin(worker: Driver) -> None:
    reader = body("import os\ndef f():\n    return os.read(0, 100)\n")
    worker.send(reader, jobs(reader, [()]))
    assert values(worker.wait_results(1)) == {1: b""}


def test_jobs_do_not_see_the_secret(worker: Driver) -> None:
    peek = body("import os\ndef f():\n    return os.environ.get('PPFT_WORKER_SECRET')\n")
    worker.send(peek, jobs(peek, [()]))
    assert values(worker.wait_results(1)) == {1: None}


def test_stats_count_jobs_and_their_time(worker: Driver) -> None:
    worker.send(PLUS_ONE, jobs(PLUS_ONE, [(i,) for i in range(10)]))
    worker.wait_results(10)
    worker.send(StatsRequest())
    worker.pump(lambda: any(isinstance(e, StatsReply) for e in worker.events), what="StatsReply")
    reply = next(e for e in worker.events if isinstance(e, StatsReply))
    assert (reply.jobs_done, reply.workers, reply.clients) == (10, 1, 1)
    assert reply.job_time == pytest.approx(sum(r.wall_time for r in worker.results.values()))


def test_cancel_drops_queued_jobs_only(spawn: Callable[..., subprocess.Popen[bytes]]) -> None:
    started_r, started_w = os.pipe()
    release_r, release_w = os.pipe()
    try:
        driver = Driver(spawn(pass_fds=(started_w, release_r)))
        driver.handshake()
        block = blocking_body(started_w, release_r)
        driver.send(block, jobs(block, [()]), PLUS_ONE, jobs(PLUS_ONE, [(i,) for i in range(2, 6)], 2))
        driver.pump(lambda: job_started(started_r), what="job 1 to start", wake=(started_r,))
        driver.send(Cancel((1, 3, 4, 99)))  # 1 runs already, 99 is unknown: both left alone
        driver.flush()
        os.write(release_w, b"r")
        results = driver.wait_results(5)
    finally:
        for fd in (started_r, started_w, release_r, release_w):
            os.close(fd)
    assert pickle.loads(results[1].value) == b"r"
    for job_id in (3, 4):
        assert not results[job_id].ok
        assert results[job_id].error_type == "concurrent.futures.CancelledError"
        assert results[job_id].error_message == "cancelled before it started"
    assert values({i: results[i] for i in (2, 5)}) == {2: 3, 5: 6}
