"""A client that dies: its queued jobs are dropped and its running jobs stopped, so the next client's jobs
do not wait behind work nobody wants.

Reproduced: the next client waited 6.5 s behind an 8 s job of a SIGKILLed client. Now the worker running
such a job is killed and replaced at once (as for a lost worker), and the jobs of other clients that were
batched on that worker run again elsewhere: not lost, not failed.
"""

from __future__ import annotations

import os
import pickle
import signal
import socket
import struct
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ppft_protocol import FunctionBody, Job, JobBatch


def job(job_id: int, body: FunctionBody, *args: object) -> Job:
    return Job(job_id, body.digest, pickle.dumps(args), 5)


def die(peer: Any) -> None:
    """End the peer as a killed process would: a reset, no Bye."""
    peer.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    peer.close()


def test_a_client_that_dies_has_its_running_job_stopped(
    start_ppserver: Callable[..., Any], free_port: int, connect: Callable[..., Any],
    bodies: dict[str, FunctionBody], tmp_path: Path, children_of: Callable[[int], list[int]],
    wait_until: Callable[..., None],
) -> None:  # fmt: skip
    server = start_ppserver("-i", "127.0.0.1", "-p", str(free_port), "-w", "1")
    server.wait_started()
    nap, mark = bodies["nap"], tmp_path / "started"
    doomed = connect(free_port).established()
    doomed.send(nap, JobBatch((job(1, nap, 60, str(mark)),)))
    doomed.wait_for(lambda _: mark.exists(), what="the long job to start")
    (worker,) = server.workers(1)
    die(doomed)
    started = time.monotonic()
    (result,) = connect(free_port).established().run(bodies["echo"], ("next",))
    assert result.ok and time.monotonic() - started < 10
    # killed, and replaced: its replacement may answer before the killed process is gone
    wait_until(lambda: worker not in children_of(server.pid), 10, "the killed worker to be gone")
    server.workers(1)


def test_other_clients_jobs_batched_behind_it_run_again(
    start_ppserver: Callable[..., Any], free_port: int, connect: Callable[..., Any],
    bodies: dict[str, FunctionBody], tmp_path: Path,
) -> None:  # fmt: skip
    """One worker, one frame holding a long job of the client that dies and tiny jobs of another client: the
    other client's jobs are requeued and answered, each once."""
    server = start_ppserver("-i", "127.0.0.1", "-p", str(free_port), "-w", "1")
    server.wait_started()
    nap, mark = bodies["nap"], tmp_path / "started"
    teacher = connect(free_port).established()
    assert all(r.ok for r in teacher.run(nap, *[(0,)] * 40))  # nap is tiny: its jobs now travel in batches
    doomed, other = connect(free_port).established(), connect(free_port).established()
    os.kill(server.pid, signal.SIGSTOP)  # both frames arrive before the ppserver dispatches either
    try:
        doomed.send(nap, JobBatch((job(1, nap, 60, str(mark)),)))
        other.send(nap, JobBatch(tuple(job(i, nap, 0.01) for i in range(1, 9))))
    finally:
        os.kill(server.pid, signal.SIGCONT)
    doomed.wait_for(lambda _: mark.exists(), what="the long job to start")
    die(doomed)
    other.wait_for(lambda p: len(p.results()) == 8, timeout=15, what="the other client's 8 results")
    assert all(r.ok for r in other.results().values())
    assert sum(len(e.results) for e in other.events if hasattr(e, "results")) == 8  # each once


def test_a_dial_in_worker_stops_the_running_job_of_a_client_that_died(
    start_ppserver: Callable[..., Any], start_dialin: Callable[..., Any], free_port: int,
    connect: Callable[..., Any], bodies: dict[str, FunctionBody], tmp_path: Path,
) -> None:  # fmt: skip
    """With protocol version 2 the ppserver tells its dial-in workers which jobs nobody wants any more; the
    dial-in kills and replaces the worker process running one, and answers it as cancelled."""
    server = start_ppserver("-i", "127.0.0.1", "-p", str(free_port), "-w", "0", "--workers-secret", "w")
    server.wait_started()
    dialin = start_dialin(free_port, "-w", "1", "-s", "w")
    nap, mark = bodies["nap"], tmp_path / "started"
    doomed = connect(free_port).established()
    doomed.wait_for(lambda p: any(getattr(e, "workers", 0) == 1 for e in p.events), what="the dial-in")
    doomed.send(nap, JobBatch((job(1, nap, 60, str(mark)),)))
    doomed.wait_for(lambda _: mark.exists(), what="the long job to start")
    die(doomed)
    started = time.monotonic()
    (result,) = connect(free_port).established().run(bodies["echo"], ("next",))
    assert result.ok and time.monotonic() - started < 10
    dialin.wait_for_line(r"stopped: its client left while it ran that client's job")
