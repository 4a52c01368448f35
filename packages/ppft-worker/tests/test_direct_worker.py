"""A direct worker (`ppft_worker.pool.start_direct_worker`) on a real TCP connection, without a ppserver: it
says nothing before the client's first bytes, then runs the handshake and the worker loop; what its channel
may be comes from the starter (sealed, AES-256-GCM offered, or unsealed). It reports its counts on the pipe
its starter passed (`ppft_worker.process.report`), and serves on when that pipe is full or closed. Every test
runs with a direct worker exec'd and with one forked by a fork server (`ForkServer.fork_direct`): the same
process either way."""

from __future__ import annotations

import os
import pickle
import select
import socket
import subprocess
import time
from collections.abc import Callable, Iterator

import pytest

from ppft_protocol import Connection, Job, JobBatch, NodeInfo, ResultBatch, Role
from ppft_worker.pool import ForkServer, WorkerProcess, start_direct_worker
from ppft_worker.pool.forkserver import ServedProcess, forkserver_possible
from ppft_worker.pool.spawn import worker_env
from ppft_worker.process import FORKSERVER_DIRECT_ENV, REPORT_RECORD

SECRET = b"direct worker secret"


def triple(x):
    return 3 * x


def _serve_jobs(client: socket.socket, conn: Connection, values: list[object]) -> list[object]:
    """Run `triple` on each of `values` (one batch); the results, ok or not, by job id."""
    from ppft_client.shipping.functions import function_body

    body = function_body(triple)
    conn.send(body)
    conn.send(JobBatch(tuple(Job(i, body.digest, pickle.dumps((v,))) for i, v in enumerate(values))))
    client.sendall(conn.data_to_send())
    results = {}
    while len(results) < len(values):
        data = client.recv(65536)
        assert data, "the direct worker closed the connection"
        for event in conn.receive_data(data):
            if isinstance(event, ResultBatch):
                results.update((r.job_id, pickle.loads(r.value) if r.ok else None) for r in event.results)
    return [results[i] for i in range(len(values))]


def _records(fd: int, until: tuple[int, int], timeout: float = 10.0) -> list[tuple[int, int, float]]:
    """The reports read from `fd` until one says `until` (jobs done, failed); fails after `timeout`."""
    records: list[tuple[int, int, float]] = []
    deadline = time.monotonic() + timeout
    while not records or records[-1][:2] != until:
        left = deadline - time.monotonic()
        assert left > 0, f"no report of {until} within {timeout} s: {records}"
        if select.select([fd], [], [], left)[0]:
            data = os.read(fd, REPORT_RECORD.size * 64)
            assert data and len(data) % REPORT_RECORD.size == 0, data
            records.extend(REPORT_RECORD.iter_unpack(data))
    return records


@pytest.fixture
def report_pipe() -> Iterator[tuple[int, int]]:
    """(read end, write end) of a pipe a direct worker reports on; both closed at the end."""
    read, write = os.pipe()
    yield read, write
    for fd in (read, write):
        try:
            os.close(fd)
        except OSError:
            pass  # closed by the test already


@pytest.fixture
def linked() -> Iterator[tuple[socket.socket, socket.socket]]:
    """(the client's end, the end handed to the worker) of one TCP connection on 127.0.0.1."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        client = socket.create_connection(listener.getsockname(), timeout=20)
        served, _ = listener.accept()
    yield client, served
    client.close()
    served.close()


def ready_forkserver() -> ForkServer:
    """A fork server as a ppserver's pool shares it (`WorkerLives.share_forkserver`), ready."""
    server = ForkServer(lambda: dict(worker_env(os.urandom(32).hex()), **{FORKSERVER_DIRECT_ENV: "1"}))
    server.start()
    deadline = time.monotonic() + 20
    while not server.ready():
        assert time.monotonic() < deadline, "the fork server did not get ready within 20 s"
        time.sleep(0.01)
    return server


Start = Callable[..., WorkerProcess]


@pytest.fixture(params=["exec", "forkserver"])
def start(request: pytest.FixtureRequest) -> Iterator[Start]:
    """`start_direct_worker`, its process exec'd, or forked by a fork server made for the test; every process
    it started is killed (by pidfd or pid) and reaped at the end, then the fork server closed."""
    started: list[WorkerProcess] = []
    server = None
    if request.param == "forkserver":
        if not forkserver_possible():
            pytest.skip("no fork server on this platform (no pidfds)")
        server = ready_forkserver()

    def start(sock: socket.socket, secret: bytes, **options: object) -> WorkerProcess:
        proc = start_direct_worker(sock, secret, server=server, **options)
        started.append(proc)
        expected = subprocess.Popen if server is None else ServedProcess
        assert isinstance(proc, expected), proc
        return proc

    yield start
    for proc in started:
        if proc.poll() is None:
            proc.kill()
        proc.wait(10)
    if server is not None:
        server.close()


def _greet(sock: socket.socket, conn: Connection) -> NodeInfo:
    sock.sendall(conn.data_to_send())
    while True:
        data = sock.recv(65536)
        assert data, "the direct worker closed the connection during its handshake"
        events = conn.receive_data(data)
        out = conn.data_to_send()
        if out:
            sock.sendall(out)
        for event in events:
            if isinstance(event, NodeInfo):
                return event


@pytest.mark.parametrize(("aes_gcm", "plain", "channel"), [(True, False, "aes-256-gcm"), (False, True, "")])
def test_a_direct_worker_speaks_only_after_the_client(linked, start, aes_gcm, plain, channel):
    client, served = linked
    proc = start(served, SECRET, allow_plain=plain, aes_gcm=aes_gcm)
    served.close()  # the worker holds the connection now
    client.settimeout(0.5)
    with pytest.raises(TimeoutError):
        client.recv(1)  # nothing before our first bytes: our opening goes first
    client.settimeout(20)
    conn = Connection(Role.CLIENT, SECRET, aes_gcm=True, allow_plain=True)
    info = _greet(client, conn)
    assert (info.kind, info.workers) == ("worker", 1)
    assert conn.cipher == channel  # "": unsealed, as both ends agreed
    from ppft_client.shipping.functions import function_body

    body = function_body(triple)
    conn.send(body)
    conn.send(JobBatch((Job(5, body.digest, pickle.dumps((14,))),)))
    client.sendall(conn.data_to_send())
    while True:
        data = client.recv(65536)
        assert data
        batches = [e for e in conn.receive_data(data) if isinstance(e, ResultBatch)]
        if batches:
            break
    (result,) = batches[0].results
    assert result.ok and pickle.loads(result.value) == 42
    client.close()
    assert proc.wait(10) == 0  # EOF ends it


def test_a_sealed_direct_worker_refuses_an_unsealed_channel(linked, start):
    client, served = linked
    start(served, SECRET, allow_plain=False, aes_gcm=False)
    served.close()
    conn = Connection(Role.CLIENT, SECRET, allow_plain=True)
    _greet(client, conn)
    assert conn.cipher == "chacha20-poly1305"


def test_a_direct_worker_reports_its_counts_while_its_client_waits_and_as_it_ends(linked, start, report_pipe):
    client, served = linked
    read, write = report_pipe
    proc = start(served, SECRET, allow_plain=True, aes_gcm=False, report_fd=write)
    served.close()
    os.close(write)  # the worker holds the only write end: EOF once it exits
    conn = Connection(Role.CLIENT, SECRET, allow_plain=True)
    _greet(client, conn)
    assert _serve_jobs(client, conn, [1, 2, "x", 4]) == [3, 6, "xxx", 12]
    assert _serve_jobs(client, conn, [[1]] * 3 + [None]) == [[1, 1, 1]] * 3 + [None]  # None * 3 raises
    records = _records(read, (8, 1))  # we send nothing more: it reports as it waits for us
    assert records == sorted(records) and records[-1][2] > 0
    client.close()
    assert proc.wait(10) == 0
    while os.read(read, REPORT_RECORD.size):
        pass  # its last report said nothing new (it had no new jobs): EOF ends it


@pytest.mark.parametrize("spoilt", ["full", "closed"])
def test_a_direct_worker_serves_on_when_its_report_pipe_is_full_or_closed(linked, start, report_pipe, spoilt):
    client, served = linked
    read, write = report_pipe
    os.set_blocking(write, False)
    if spoilt == "full":
        try:
            while True:
                os.write(write, b"\0" * REPORT_RECORD.size)
        except BlockingIOError:
            pass
    else:
        os.close(read)
    proc = start(served, SECRET, allow_plain=True, aes_gcm=False, report_fd=write)
    served.close()
    conn = Connection(Role.CLIENT, SECRET, allow_plain=True)
    _greet(client, conn)
    for _ in range(3):  # across reports: at least one is due (0.5 s) and cannot be written
        assert _serve_jobs(client, conn, list(range(100))) == [3 * i for i in range(100)]
        time.sleep(0.6)  # no waiting for anything: time for a report to fall due, and for the idle one
    if spoilt == "full":  # the pipe drained, the next report says it all
        while select.select([read], [], [], 0)[0]:
            os.read(read, 1 << 16)
        assert _serve_jobs(client, conn, [1]) == [3]
        assert _records(read, (301, 0))[-1][:2] == (301, 0)
    client.close()
    assert proc.wait(10) == 0


def inventory():
    """What a job sees of its direct worker: its descriptors above 2 (kind, close-on-exec), fds 0 and 1,
    the PPFT_ variables of its environment, its parent."""
    import fcntl
    import os

    fds = []
    listing = os.listdir("/proc/self/fd")
    for name in listing:
        fd = int(name)
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
            cloexec = bool(fcntl.fcntl(fd, fcntl.F_GETFD) & fcntl.FD_CLOEXEC)
        except OSError:
            continue  # the listing's own descriptor, closed by now
        if fd > 2:
            fds.append((target.split(":")[0] if ":" in target else "file", cloexec))
    kinds = (os.readlink("/proc/self/fd/0"), os.readlink("/proc/self/fd/1") == os.readlink("/proc/self/fd/2"))
    names = sorted(name for name in os.environ if name.startswith("PPFT_"))
    return sorted(fds), kinds, names, os.getppid()


def test_a_direct_worker_holds_its_connection_and_its_pipes_only(linked, start, report_pipe):
    """Exec'd or forked, the same process: the socket twice (the channel, off fds 0 and 1), its two pipes,
    nothing else (none of the fork server's descriptors), none inherited by a job's processes, no secret and
    no descriptor number left in the environment."""
    client, served = linked
    refs_read, refs_write = os.pipe()
    try:
        proc = start(
            served, SECRET, allow_plain=True, aes_gcm=False, report_fd=report_pipe[1], refs_fd=refs_read
        )
    finally:
        os.close(refs_read)
    served.close()
    conn = Connection(Role.CLIENT, SECRET, allow_plain=True)
    _greet(client, conn)
    from ppft_client.shipping.functions import function_body

    body = function_body(inventory)
    conn.send(body)
    conn.send(JobBatch((Job(1, body.digest, pickle.dumps(())),)))
    client.sendall(conn.data_to_send())
    results = []
    while not results:
        data = client.recv(1 << 20)
        assert data
        results = [r for e in conn.receive_data(data) if isinstance(e, ResultBatch) for r in e.results]
    assert results[0].ok, results[0]
    fds, (stdin, stdout_is_stderr), names, parent = pickle.loads(results[0].value)
    os.close(refs_write)
    assert [kind for kind, _ in fds if kind != "file"] == ["pipe", "pipe", "socket", "socket"], fds
    assert all(cloexec for _, cloexec in fds), fds
    assert stdin == os.devnull and stdout_is_stderr
    assert names == sorted(name for name in os.environ if name.startswith("PPFT_"))
    assert parent == _parent(proc.pid)


def _parent(pid: int) -> int:
    with open(f"/proc/{pid}/stat") as f:
        return int(f.read().rsplit(")", 1)[1].split()[1])


needs_forkserver = pytest.mark.skipif(not forkserver_possible(), reason="no fork server here (no pidfds)")


@pytest.fixture
def forkserver() -> Iterator[ForkServer]:
    server = ready_forkserver()
    yield server
    server.close()


@needs_forkserver
def test_a_forked_direct_worker_is_the_fork_servers_child_and_dies_with_it(linked, forkserver):
    client, served = linked
    proc = start_direct_worker(served, SECRET, allow_plain=True, aes_gcm=False, server=forkserver)
    served.close()
    assert _parent(proc.pid) == forkserver.pid
    _greet(client, Connection(Role.CLIENT, SECRET, allow_plain=True))
    assert forkserver.pid is not None
    os.kill(forkserver.pid, 9)
    assert proc.wait(10) == -9  # tied to it (PR_SET_PDEATHSIG): its client sees EOF
    client.settimeout(10)
    assert client.recv(1) == b""


@needs_forkserver
def test_direct_workers_are_exec_d_until_a_killed_fork_server_is_replaced(forkserver):
    """A fork server that died fails the request that finds it dead: that worker is exec'd; the next request
    starts a new server (that one is exec'd too), and those after it are forked by the new one."""
    first = forkserver.pid
    assert first is not None
    os.kill(first, 9)
    made: list[WorkerProcess] = []
    parents: list[int] = []
    try:
        deadline = time.monotonic() + 20
        while not made or not isinstance(made[-1], ServedProcess):
            assert time.monotonic() < deadline, f"no direct worker forked by a new fork server: {made}"
            with socket.socket() as listener:
                listener.bind(("127.0.0.1", 0))
                listener.listen()
                with socket.create_connection(listener.getsockname()) as client:
                    served, _ = listener.accept()
                    with served:
                        made.append(start_direct_worker(served, SECRET, allow_plain=True, aes_gcm=False,
                                                        server=forkserver))  # fmt: skip
                    _greet(client, Connection(Role.CLIENT, SECRET, allow_plain=True))  # it serves
                    parents.append(_parent(made[-1].pid))
            time.sleep(0.02)
        assert isinstance(made[0], subprocess.Popen)  # the request that found it dead
        assert forkserver.pid not in (None, first) and parents[-1] == forkserver.pid
        assert parents[:-1] == [os.getpid()] * (len(made) - 1)
        assert forkserver.failures == 0  # the new one forked
    finally:
        for proc in made:
            if proc.poll() is None:
                proc.kill()
            proc.wait(10)


@needs_forkserver
def test_a_secret_too_long_to_send_to_the_fork_server_has_its_worker_exec_d(linked, forkserver):
    client, served = linked
    secret = b"k" * 5000
    proc = start_direct_worker(served, secret, allow_plain=True, aes_gcm=False, server=forkserver)
    try:
        served.close()
        assert isinstance(proc, subprocess.Popen)
        assert (forkserver.failures, forkserver.ready()) == (0, True)  # not the server's fault
        info = _greet(client, Connection(Role.CLIENT, secret, allow_plain=True))
        assert info.kind == "worker"
    finally:
        proc.kill()
        proc.wait(10)


@needs_forkserver
def test_a_fork_server_answers_a_request_that_is_not_one_and_serves_on(linked, forkserver):
    from ppft_worker.process import FORKSERVER_MESSAGE

    client, served = linked
    # the report pipe is announced but not sent; a secret's length that is not the one sent; no descriptor
    for request, fds in (
        (FORKSERVER_MESSAGE.pack(b"D", 4, 3) + b"abc", [served.fileno()]),
        (FORKSERVER_MESSAGE.pack(b"D", 0, 9) + b"abc", [served.fileno()]),
        (FORKSERVER_MESSAGE.pack(b"F", 0, 0), []),
        (FORKSERVER_MESSAGE.pack(b"Q", 0, 0), [served.fileno()]),
    ):
        with pytest.raises(OSError, match="Invalid argument"):
            forkserver._ask(request, fds)
    assert forkserver.failures == 0
    proc = start_direct_worker(served, SECRET, allow_plain=True, aes_gcm=False, server=forkserver)
    served.close()
    try:
        assert isinstance(proc, ServedProcess)
        assert _greet(client, Connection(Role.CLIENT, SECRET, allow_plain=True)).kind == "worker"
    finally:
        proc.kill()
        proc.wait(10)
