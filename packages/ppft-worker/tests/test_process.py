"""The worker process (`python -S -m ppft_worker`), driven over its real pipes as a WorkerPool drives it."""

from __future__ import annotations

import contextlib
import os
import pickle
import select
import signal
import statistics
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

import ppft_worker
from ppft_protocol import (
    AuthenticationError,
    Bye,
    Cancel,
    Closed,
    Connection,
    Established,
    FunctionBody,
    Job,
    JobBatch,
    Message,
    NodeInfo,
    Result,
    ResultBatch,
    Role,
    StatsReply,
    StatsRequest,
    function_digest,
)
from ppft_protocol.bodies import BodyLedger
from ppft_protocol.framing import encode_frame_header
from ppft_protocol.messages import encode_message

SECRET = bytes(range(32))
TIMEOUT = 20.0
WORKER_CMD = [sys.executable, "-S", "-m", "ppft_worker"]


def worker_env(secret: bytes = SECRET, parent_pid: int | None = None) -> dict[str, str]:
    """The environment a WorkerPool gives its workers."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(p or os.getcwd() for p in sys.path))
    env["PPFT_WORKER_SECRET"] = secret.hex()
    env["PPFT_PARENT_PID"] = str(os.getpid() if parent_pid is None else parent_pid)
    return env


def body(source: str, name: str = "f") -> FunctionBody:
    source = textwrap.dedent(source)
    return FunctionBody(function_digest(name, (source,), (), b""), name, (source,))


PLUS_ONE = body("def f(x):\n    return x + 1\n")


def jobs(fn: FunctionBody, args: list[tuple[object, ...]], first_id: int = 1) -> JobBatch:
    return JobBatch(tuple(Job(first_id + i, fn.digest, pickle.dumps(a)) for i, a in enumerate(args)))


class Driver:
    """One worker process and the client end of its connection; every wait is bounded."""

    def __init__(
        self, proc: subprocess.Popen[bytes], secret: bytes = SECRET, versions: tuple[int, int] = (1, 2)
    ) -> None:
        assert proc.stdin is not None and proc.stdout is not None
        self.proc = proc
        self.conn = Connection(Role.CLIENT, secret, allow_plain=True, versions=versions)
        self.rfd = proc.stdout.fileno()
        self.wfd = proc.stdin.fileno()
        os.set_blocking(self.wfd, False)
        self.out = bytearray(self.conn.data_to_send())
        self.events: list[object] = []
        self.results: dict[int, Result] = {}
        self.result_frames = 0
        self.eof = False
        self.node_info: NodeInfo | None = None

    def send(self, *messages: Message, raw: bytes = b"") -> None:
        for message in messages:
            self.conn.send(message)
        self.out += self.conn.data_to_send() + raw

    def flush(self) -> None:
        """Write everything queued for the worker."""
        self.pump(lambda: not self.out, what="our bytes to be written")

    def pump(
        self, until: Callable[[], bool], timeout: float = TIMEOUT, what: str = "", wake: tuple[int, ...] = ()
    ) -> None:
        """Move bytes both ways until `until()` holds; fail the test after `timeout` seconds.

        `wake`: other descriptors whose readiness may make `until()` true (they are watched, not read)."""
        deadline = time.monotonic() + timeout
        while not until():
            left = deadline - time.monotonic()
            if left <= 0:
                pytest.fail(f"timed out after {timeout}s waiting for {what or until}")
            if self.eof:
                pytest.fail(f"worker closed its channel while waiting for {what or until}")
            writers = [self.wfd] if self.out else []
            readable, writable, _ = select.select([self.rfd, *wake], writers, [], left)
            if writable:
                n = os.write(self.wfd, self.out)
                del self.out[:n]
            if self.rfd in readable:
                self.receive(os.read(self.rfd, 1 << 20))

    def receive(self, data: bytes) -> None:
        if not data:
            self.eof = True
        events = self.conn.receive_data(data)
        self.out += self.conn.data_to_send()
        for event in events:
            self.events.append(event)
            if isinstance(event, ResultBatch):
                self.result_frames += 1
                for result in event.results:
                    assert result.job_id not in self.results, f"job {result.job_id} answered twice"
                    self.results[result.job_id] = result
            elif isinstance(event, NodeInfo):
                self.node_info = event

    def handshake(self) -> NodeInfo:
        self.pump(lambda: self.node_info is not None, what="handshake and NodeInfo")
        assert self.node_info is not None
        return self.node_info

    def wait_results(self, count: int, timeout: float = TIMEOUT) -> dict[int, Result]:
        self.pump(lambda: len(self.results) >= count, timeout, f"{count} results")
        return self.results

    def wait_eof(self, timeout: float = TIMEOUT) -> None:
        """Read until the worker closes its channel (a Closed event or plain EOF)."""

        def closed() -> bool:
            return self.eof or any(isinstance(e, Closed) for e in self.events)

        self.flush()
        deadline = time.monotonic() + timeout
        while not closed():
            left = deadline - time.monotonic()
            if left <= 0:
                pytest.fail(f"worker did not close its channel within {timeout}s")
            if select.select([self.rfd], [], [], left)[0]:
                data = os.read(self.rfd, 1 << 20)
                if not data:
                    self.eof = True
                else:
                    self.receive(data)


@pytest.fixture
def spawn() -> Iterator[Callable[..., subprocess.Popen[bytes]]]:
    """Start worker processes; each is killed by pid at the end of the test, passed or failed."""
    procs: list[subprocess.Popen[bytes]] = []

    def start(
        secret: bytes = SECRET, stderr: int | None = None, pass_fds: tuple[int, ...] = ()
    ) -> subprocess.Popen[bytes]:
        proc = subprocess.Popen(
            WORKER_CMD,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=stderr,
            env=worker_env(secret),
            pass_fds=pass_fds,
        )
        procs.append(proc)
        return proc

    yield start
    for proc in procs:
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGKILL)
        proc.wait(TIMEOUT)
        for f in (proc.stdin, proc.stdout):
            if f is not None:
                with contextlib.suppress(OSError):
                    f.close()


@pytest.fixture
def worker(spawn: Callable[..., subprocess.Popen[bytes]]) -> Driver:
    driver = Driver(spawn())
    driver.handshake()
    return driver


def values(results: dict[int, Result]) -> dict[int, object]:
    bad = {i: (r.error_type, r.error_message) for i, r in results.items() if not r.ok}
    assert not bad, f"jobs failed: {bad}"
    return {i: pickle.loads(r.value) for i, r in results.items()}


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
