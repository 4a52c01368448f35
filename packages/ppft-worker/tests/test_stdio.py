"""The remote side of an ssh node (`python -m ppft_worker --stdio`), driven over pipes as sshd gives them:
the token first, READY back, then the protocol as a ppserver speaks it with one client."""

from __future__ import annotations

import contextlib
import os
import pickle
import select
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator

import pytest
from proclib import children_of, pid_alive
from workerpipe import SECRET, TIMEOUT, body

from ppft_protocol import (
    Bye,
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
)
from ppft_worker.pipes import PipeChannel
from ppft_worker.stdio import READY, TOKEN_MAGIC, TokenError, make_token, read_token

STDIO_CMD = [sys.executable, "-m", "ppft_worker", "--stdio", "-w", "2"]


PIDS = body("def f(x):\n    import os\n    return x, os.getpid(), os.getppid()\n")


class Client:
    """The client end of a `--stdio` process's pipes; every wait is bounded."""

    def __init__(self, proc: subprocess.Popen[bytes], secret: bytes = SECRET, token: bytes | None = None):
        assert proc.stdin is not None and proc.stdout is not None
        self.proc = proc
        self.rfd = proc.stdout.fileno()
        self.wfd = proc.stdin.fileno()
        self.conn = Connection(Role.CLIENT, secret, allow_plain=True)
        self.out = bytearray((make_token(secret) if token is None else token) + self.conn.data_to_send())
        self.before_ready = b""
        self.ready = False
        self.pending = b""
        self.events: list[object] = []
        self.results: dict[int, Result] = {}
        self.eof = False

    def send(self, *messages: Message) -> None:
        for message in messages:
            self.conn.send(message)
        self.out += self.conn.data_to_send()

    def pump(self, until: Callable[[], bool], what: str, timeout: float = TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        while not until():
            left = deadline - time.monotonic()
            if left <= 0:
                pytest.fail(f"timed out after {timeout}s waiting for {what}")
            if self.eof:
                pytest.fail(f"the --stdio process closed its stdout while waiting for {what}")
            readable, writable, _ = select.select([self.rfd], [self.wfd] if self.out else [], [], left)
            if writable:
                n = os.write(self.wfd, self.out)
                del self.out[:n]
            if readable:
                self._receive(os.read(self.rfd, 1 << 20))

    def _receive(self, data: bytes) -> None:
        if not data:
            self.eof = True
        if not self.ready:
            self.pending += data
            at = self.pending.find(READY)
            if at < 0:
                return
            self.before_ready, data = self.pending[:at], self.pending[at + len(READY) :]
            self.ready = True
            if not data:
                return  # nothing of the protocol yet (an empty read would mean EOF)
        events = self.conn.receive_data(data)
        self.out += self.conn.data_to_send()
        for event in events:
            self.events.append(event)
            if isinstance(event, ResultBatch):
                for result in event.results:
                    assert result.job_id not in self.results, f"job {result.job_id} answered twice"
                    self.results[result.job_id] = result

    def node_info(self) -> NodeInfo:
        self.pump(lambda: any(isinstance(e, NodeInfo) for e in self.events), "NodeInfo")
        return next(e for e in self.events if isinstance(e, NodeInfo))

    def run(self, fn: FunctionBody, args: list[tuple[object, ...]], first: int = 1) -> list[object]:
        self.node_info()
        self.send(fn, JobBatch(tuple(Job(first + i, fn.digest, pickle.dumps(a)) for i, a in enumerate(args))))
        wanted = range(first, first + len(args))
        self.pump(lambda: all(i in self.results for i in wanted), f"{len(args)} results")
        out = []
        for i in wanted:
            result = self.results[i]
            assert result.ok, result.error_message
            out.append(pickle.loads(result.value))
        return out


@pytest.fixture
def stdio() -> Iterator[Callable[..., subprocess.Popen[bytes]]]:
    """Start `--stdio` processes (stdin, stdout and stderr on pipes, as sshd gives them); each is killed by
    pid at the end of the test, with its workers."""
    procs: list[subprocess.Popen[bytes]] = []

    def start(argv: list[str] | None = None) -> subprocess.Popen[bytes]:
        proc = subprocess.Popen(
            argv or STDIO_CMD, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        procs.append(proc)
        return proc

    yield start
    for proc in procs:
        kids = children_of(proc.pid)
        if proc.poll() is None:
            proc.kill()
        proc.wait(TIMEOUT)
        for kid in kids:
            if pid_alive(kid):
                os.kill(kid, signal.SIGKILL)
        for f in (proc.stdin, proc.stdout, proc.stderr):
            if f is not None:
                with contextlib.suppress(OSError):
                    f.close()


def wait_exit(proc: subprocess.Popen[bytes]) -> tuple[int, str]:
    """The exit status and stderr of `proc`, which must exit within TIMEOUT seconds."""
    assert proc.stderr is not None
    try:
        proc.wait(TIMEOUT)
    except subprocess.TimeoutExpired:
        pytest.fail("the --stdio process did not exit")
    return proc.returncode, proc.stderr.read().decode(errors="replace")


def test_jobs_run_on_a_pool_of_its_children(stdio) -> None:  # type: ignore[no-untyped-def]
    proc = stdio()
    client = Client(proc)
    info = client.node_info()
    assert (info.kind, info.workers) == ("server", 2)
    established = next(e for e in client.events if isinstance(e, Established))
    assert not established.sealed  # the client asked for no second layer over ssh, and it was agreed
    results = client.run(PIDS, [(i,) for i in range(20)])
    assert [x for x, _, _ in results] == list(range(20))  # type: ignore[misc]
    assert {parent for _, _, parent in results} == {proc.pid}  # type: ignore[misc]
    assert client.before_ready == b""


def test_stdin_closing_ends_it_and_its_workers(stdio) -> None:  # type: ignore[no-untyped-def]
    proc = stdio()
    client = Client(proc)
    client.run(PIDS, [(1,)])
    workers = children_of(proc.pid)
    assert len(workers) == 2
    assert proc.stdin is not None
    proc.stdin.close()  # the client (or its ssh) is gone
    code, err = wait_exit(proc)
    assert code == 0, err
    assert not any(pid_alive(pid) for pid in workers)
    assert "the channel closed" in err


def test_bye_ends_it(stdio) -> None:  # type: ignore[no-untyped-def]
    proc = stdio()
    client = Client(proc)
    client.node_info()
    client.send(Bye("the client is done"))
    client.pump(lambda: not client.out, "the Bye to go out")
    code, err = wait_exit(proc)
    assert code == 0
    assert "the client left (the client is done)" in err


def test_sigterm_says_why_to_the_client(stdio) -> None:  # type: ignore[no-untyped-def]
    proc = stdio()
    client = Client(proc)
    client.node_info()
    proc.send_signal(signal.SIGTERM)
    client.pump(lambda: any(isinstance(e, (Bye, Closed)) for e in client.events) or client.eof, "its Bye")
    code, _ = wait_exit(proc)
    assert code == 0


def test_a_wrong_secret_runs_nothing(stdio) -> None:  # type: ignore[no-untyped-def]
    proc = stdio()
    client = Client(proc, secret=bytes(32), token=make_token(SECRET))  # proves another secret than it sent
    with contextlib.suppress(Exception):
        client.pump(lambda: client.eof, "the refusal")
    assert not any(isinstance(e, NodeInfo) for e in client.events)
    code, err = wait_exit(proc)
    assert code == 2
    assert "the client was not admitted: wrong secret" in err


def test_without_the_token_it_says_it_is_not_run_by_hand(stdio) -> None:  # type: ignore[no-untyped-def]
    proc = stdio()
    assert proc.stdin is not None and proc.stdout is not None
    proc.stdin.write(b"hello\n")
    proc.stdin.close()
    code, err = wait_exit(proc)
    assert code == 2
    assert "stdin did not start with a ppft client's token (it started with b'hello\\n')" in err
    assert "run by a ppft client over ssh" in err
    assert proc.stdout.read() == b""  # nothing at all on the channel


def test_stdin_closed_before_the_token(stdio) -> None:  # type: ignore[no-untyped-def]
    proc = stdio()
    assert proc.stdin is not None
    proc.stdin.close()
    code, err = wait_exit(proc)
    assert code == 2
    assert "stdin closed before the ppft client's token arrived" in err


def test_a_stray_print_in_the_process_goes_to_stderr_not_into_the_channel(stdio) -> None:  # type: ignore[no-untyped-def]
    """fd 1 is moved off the channel before anything else runs: a print there lands in the log."""
    code = (
        "import sys\nfrom ppft_worker.stdio import command\nread = command.read_token\n"
        "def noisy(fd, *a):\n    print('stray print', flush=True)\n    return read(fd, *a)\n"
        "command.read_token = noisy\nsys.exit(command.main(['--stdio', '-w', '1']))\n"
    )
    proc = stdio([sys.executable, "-c", code])
    client = Client(proc)
    assert client.run(PIDS, [(5,)])[0][0] == 5  # type: ignore[index]
    assert client.before_ready == b""
    assert proc.stdin is not None
    proc.stdin.close()
    _, err = wait_exit(proc)
    assert "stray print" in err


def test_read_token_takes_exactly_the_token() -> None:
    r, w = os.pipe()
    try:
        os.write(w, make_token(SECRET) + b"protocol bytes")
        assert read_token(r, 5) == SECRET
        assert os.read(r, 100) == b"protocol bytes"  # not one byte more was taken
        os.write(w, TOKEN_MAGIC[:5])
        with pytest.raises(TokenError, match="no ppft client token on stdin within 0 s"):
            read_token(r, 0.2)
    finally:
        os.close(r)
        os.close(w)


def test_pipe_channel_reads_and_writes_like_a_socket() -> None:
    r1, w1 = os.pipe()
    r2, w2 = os.pipe()
    channel = PipeChannel(r1, w2)
    try:
        assert channel.fileno() == r1 and channel.write_fd == w2
        with pytest.raises(BlockingIOError):
            channel.recv(10)
        os.write(w1, b"abc")
        assert channel.recv(10) == b"abc"
        assert channel.sendmsg([b"x", memoryview(b"yz")]) == 3
        assert os.read(r2, 10) == b"xyz"
        os.close(r2)
        r2 = -1
        with pytest.raises(BrokenPipeError):
            channel.send(b"gone")
    finally:
        channel.close()
        for fd in (w1, r2):
            if fd >= 0:
                os.close(fd)


def test_the_preamble_is_the_documented_one() -> None:
    """docs/protocol.md, "The stdio transport": another client can be written from it."""
    assert TOKEN_MAGIC.hex() == "707066742d737464696f2d7365637265742f310a"
    assert READY.hex() == "00707066742d737464696f2d72656164792f3100"
    assert len(make_token(SECRET)) == 52


def test_the_limits_on_its_workers_are_the_dial_in_workers_flags(capsys: pytest.CaptureFixture[str]) -> None:
    from ppft_worker.stdio.command import make_parser

    parser = make_parser()
    args = parser.parse_args(["--stdio", "--worker-memory-limit", "2GiB", "--max-jobs-per-worker", "5"])
    assert (args.worker_memory_limit, args.max_jobs_per_worker) == (2 << 30, 5)
    args = parser.parse_args(["--stdio", "--worker-memory-limit", str(2 << 30)])  # as the client sends it
    assert (args.worker_memory_limit, args.max_jobs_per_worker) == (2 << 30, None)
    for flag, value, problem in (
        ("--worker-memory-limit", "2gigs", "--worker-memory-limit must be a size such as '2GiB'"),
        ("--max-jobs-per-worker", "0", "--max-jobs-per-worker wants a whole number >= 1, not '0'"),
    ):
        with pytest.raises(SystemExit) as info:
            parser.parse_args(["--stdio", flag, value])
        assert info.value.code == 2
        assert problem in capsys.readouterr().err
