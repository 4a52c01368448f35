"""The worker process (`python -S -m ppft_worker`), driven over its real pipes: how it ends (Bye, EOF, a
job's `os._exit`, garbage, its parent's death), a few figures, and the function bodies it keeps."""

from __future__ import annotations

import contextlib
import os
import pickle
import select
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from workerpipe import PLUS_ONE, TIMEOUT, WORKER_CMD, Driver, body, jobs, values, worker_env

from ppft_protocol import (
    Bye,
    FunctionBody,
    Job,
    JobBatch,
)
from ppft_protocol.bodies import BodyLedger

# -- how the worker ends --------------------------------------------------------------------------------


def test_bye_makes_the_worker_exit_0(worker: Driver) -> None:
    worker.send(Bye("done"))
    worker.flush()
    assert worker.proc.wait(TIMEOUT) == 0


def test_worker_exits_when_stdin_closes(worker: Driver) -> None:
    assert worker.proc.stdin is not None
    worker.proc.stdin.close()
    assert worker.proc.wait(TIMEOUT) == 0


def test_job_calling_os_exit_ends_the_worker_with_its_code(worker: Driver) -> None:
    exit3 = body("import os\ndef f(code):\n    os._exit(code)\n")
    worker.send(exit3, jobs(exit3, [(3,)]))
    worker.wait_eof()
    assert worker.proc.wait(TIMEOUT) == 3
    assert worker.results == {}


def test_garbage_on_the_channel_is_a_protocol_error(spawn: Callable[..., subprocess.Popen[bytes]]) -> None:
    proc = spawn(stderr=subprocess.PIPE)
    driver = Driver(proc)
    driver.handshake()
    driver.send(raw=b"\x00\x00\x00\x01\xee\x00")  # a frame of an unknown type
    driver.flush()
    assert proc.wait(TIMEOUT) == 2
    assert proc.stderr is not None
    assert b"unknown frame type" in proc.stderr.read()


def test_worker_without_secret_refuses_to_start() -> None:
    env = worker_env()
    del env["PPFT_WORKER_SECRET"]
    proc = subprocess.run(WORKER_CMD, env=env, capture_output=True, timeout=TIMEOUT, check=False)
    assert proc.returncode == 2
    assert b"PPFT_WORKER_SECRET" in proc.stderr
    assert proc.stdout == b""


def test_unknown_argument_is_refused() -> None:
    proc = subprocess.run(
        [*WORKER_CMD, "--bogus"], env=worker_env(), capture_output=True, timeout=TIMEOUT, check=False
    )
    assert proc.returncode == 2
    assert b"--bogus" in proc.stderr


_INTERMEDIATE = """
import os, pickle, subprocess, sys
from ppft_protocol import Connection, FunctionBody, Job, JobBatch, NodeInfo, Role, function_digest

started = int(os.environ["STARTED_FD"])
os.environ["PPFT_PARENT_PID"] = str(os.getpid())
proc = subprocess.Popen(sys.argv[1:], stdin=subprocess.PIPE, stdout=subprocess.PIPE, pass_fds=(started,))
conn = Connection(Role.CLIENT, bytes.fromhex(os.environ["PPFT_WORKER_SECRET"]), allow_plain=True)
proc.stdin.write(conn.data_to_send()); proc.stdin.flush()
ready = False
while not ready:
    for event in conn.receive_data(os.read(proc.stdout.fileno(), 65536)):
        ready = ready or isinstance(event, NodeInfo)
    proc.stdin.write(conn.data_to_send()); proc.stdin.flush()
src = "import os, time\\ndef f(fd):\\n    os.write(fd, b's')\\n    time.sleep(3600)\\n"
body = FunctionBody(function_digest("f", (src,), (), b""), "f", (src,))
conn.send(body)
conn.send(JobBatch((Job(1, body.digest, pickle.dumps((started,))),)))
proc.stdin.write(conn.data_to_send()); proc.stdin.flush()
print(proc.pid, flush=True)
sys.stdin.read()  # until the test SIGKILLs us
"""


def test_worker_dies_with_its_parent(tmp_path: Path) -> None:
    """The parent is SIGKILLed while its worker runs an endless job: EOF cannot help, PDEATHSIG must."""
    script = tmp_path / "parent.py"
    script.write_text(_INTERMEDIATE)
    started_r, started_w = os.pipe()
    env = worker_env()
    env["STARTED_FD"] = str(started_w)
    parent = subprocess.Popen(
        [sys.executable, str(script), *WORKER_CMD],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        env=env,
        pass_fds=(started_w,),
    )
    os.close(started_w)
    worker_pid = 0
    pidfd = -1
    try:
        assert parent.stdout is not None
        ready = select.select([parent.stdout], [], [], TIMEOUT)[0]
        assert ready, "the intermediate parent did not report its worker"
        worker_pid = int(parent.stdout.readline())
        pidfd = os.pidfd_open(worker_pid)
        assert select.select([started_r], [], [], TIMEOUT)[0], "the worker did not start its job"
        os.kill(parent.pid, signal.SIGKILL)
        parent.wait(TIMEOUT)
        gone = select.select([pidfd], [], [], TIMEOUT)[0]
        assert gone, f"worker {worker_pid} still alive {TIMEOUT}s after its parent was SIGKILLed"
    finally:
        if parent.poll() is None:
            os.kill(parent.pid, signal.SIGKILL)
            parent.wait(TIMEOUT)
        if pidfd >= 0:
            with contextlib.suppress(ProcessLookupError):
                signal.pidfd_send_signal(pidfd, signal.SIGKILL)
            os.close(pidfd)
        os.close(started_r)
        for f in (parent.stdin, parent.stdout):
            if f is not None:
                f.close()


# -- figures (printed, not asserted) ------------------------------------------------------------------


def test_print_start_to_handshake_time(spawn: Callable[..., subprocess.Popen[bytes]]) -> None:
    times = []
    for _ in range(7):
        t0 = time.perf_counter()
        driver = Driver(spawn())
        driver.handshake()
        times.append(time.perf_counter() - t0)
        driver.send(Bye())
        driver.flush()
        assert driver.proc.wait(TIMEOUT) == 0
    print(
        f"\nworker start to handshake done: median {statistics.median(times) * 1e3:.1f} ms, "
        f"min {min(times) * 1e3:.1f} ms over {len(times)} starts"
    )


def test_print_tiny_job_throughput(worker: Driver) -> None:
    """One worker, frames of 256 jobs with up to 4 frames in flight, as a pool pipelines them."""
    total, per_frame, window = 50_000, 256, 4
    worker.send(PLUS_ONE)
    args = pickle.dumps((1,))
    sent = 0
    t0 = time.perf_counter()
    while len(worker.results) < total:
        while sent < total and sent - len(worker.results) < per_frame * window:
            n = min(per_frame, total - sent)
            worker.send(JobBatch(tuple(Job(sent + i + 1, PLUS_ONE.digest, args) for i in range(n))))
            sent += n
        target = min(total, len(worker.results) + per_frame)
        worker.pump(lambda t=target: len(worker.results) >= t)
    elapsed = time.perf_counter() - t0
    assert all(r.ok for r in worker.results.values())
    run_time = sum(r.wall_time for r in worker.results.values())
    print(
        f"\none worker over pipes: {total / elapsed:,.0f} tiny jobs/s "
        f"({elapsed / total * 1e6:.2f} us/job, of which JobRunner wall time "
        f"{run_time / total * 1e6:.2f} us); "
        f"{worker.result_frames} result frames"
    )


# -- function bodies: checked against their digests, kept within the budget (version 2) ---------------------


def test_worker_refuses_a_body_whose_digest_does_not_match(worker: Driver) -> None:
    genuine = body("def f():\n    return 'genuine'\n")
    forged = FunctionBody(genuine.digest, "f", ("def f():\n    return 'evil'\n",))
    worker.send(forged, jobs(forged, [()], 1))
    (refused,) = worker.wait_results(1).values()
    assert not refused.ok and refused.error_type == "ppft_worker.errors.JobSetupError"
    assert "digest does not match its content" in refused.error_message
    worker.send(genuine, jobs(genuine, [()], 2))
    assert pickle.loads(worker.wait_results(2)[2].value) == "genuine"


def _counters(count: int, pad: int) -> list[FunctionBody]:
    """Functions that count their calls in their own namespace, each `pad` bytes long: a namespace the worker
    rebuilt (its body forgotten, then sent again) counts from 1 again."""
    made = []
    for i in range(count):
        source = (
            f"def c{i}():\n    global calls\n    calls = globals().get('calls', 0) + 1\n    return calls\n"
            f"# {'x' * pad}\n"
        )
        made.append(body(source, f"c{i}"))
    return made


def _two_passes(
    worker: Driver, bodies: list[FunctionBody], ledger: BodyLedger
) -> tuple[list[object], list[object], int]:
    """Each function once in order, then once in reverse, sending a body when `ledger` says the worker lacks
    it (as a pool does); the values returned by each pass, and how many bodies were kept after the first."""
    passes: list[list[object]] = []
    kept = 0
    job_id = 0
    for order in (bodies, bodies[::-1]):
        got = []
        for fn in order:
            job_id += 1
            if fn.digest not in ledger:
                ledger.add(fn)
                worker.send(fn)
            worker.send(jobs(fn, [()], job_id))
            got.append(values(worker.wait_results(job_id))[job_id])
        passes.append(got)
        kept = kept or len(ledger)
    return passes[0], passes[1], kept


def test_worker_forgets_bodies_beyond_the_budget_and_runs_them_again_when_sent_again(worker: Driver) -> None:
    """80 functions of 1 MiB through one worker: it keeps the newest 64 MiB (what the sender's ledger says),
    rebuilds the others when they are sent again, and every job runs."""
    bodies = _counters(80, 1 << 20)
    ledger = BodyLedger()
    first, second, kept = _two_passes(worker, bodies, ledger)
    assert first == [1] * 80
    assert 50 <= kept < 80
    assert second == [2] * kept + [1] * (80 - kept)


def test_worker_on_a_version_1_link_keeps_every_body(spawn: Callable[..., subprocess.Popen[bytes]]) -> None:
    """A pool of ppft 2.0.0 (version 1) never sends a body twice: the worker keeps them all, as 2.0.0 did."""
    worker = Driver(spawn(), versions=(1, 1))
    worker.handshake()
    assert worker.conn.version == 1
    bodies = _counters(70, 1 << 20)
    first, second, _ = _two_passes(worker, bodies, BodyLedger(None))
    assert first == [1] * 70 and second == [2] * 70
