"""Fixtures for ppserver's tests: ppserver subprocesses that are always killed by PID (with their worker
processes), free ports, a line-by-line view of a process's stderr that can be waited on, and raw protocol
peers (`connect`): a client or dial-in worker that says exactly what a test tells it to, hostile or not."""

from __future__ import annotations

import hashlib
import os
import re
import resource
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from proclib import children_of, free_port, is_forkserver, pid_alive, wait_until

from ppft_protocol import (
    Closed,
    Connection,
    Established,
    Event,
    FunctionBody,
    Heartbeat,
    Job,
    JobBatch,
    Message,
    ProtocolError,
    Result,
    ResultBatch,
    Role,
    State,
)

SECRET = "test-secret"

STARTED = re.compile(r"ppserver \S+ \(pid (\d+)\) listening on (\S+):(\d+) with (\d+) worker")


_TIED = (
    "import ctypes, os, resource, signal, sys; ctypes.CDLL(None).prctl(1, signal.SIGKILL); "
    "n = int(os.environ.pop('PPFT_TEST_NOFILE', '0')); "
    "n and resource.setrlimit(resource.RLIMIT_NOFILE, (n, resource.getrlimit(resource.RLIMIT_NOFILE)[1])); "
    "os.execv(sys.argv[1], sys.argv[1:])"
)


def tied_to_this_process(argv: list[str]) -> list[str]:
    """`argv`, started through a trampoline that sets PR_SET_PDEATHSIG and then execs it: the daemon a
    test starts is SIGKILLed when the test process dies, even when a timeout ends it without running
    fixture teardown (the setting survives exec; no preexec_fn in a threaded process). PPFT_TEST_NOFILE
    in its environment sets its open-files limit (`ulimit -n`)."""
    return [sys.executable, "-c", _TIED, *argv]


class Ppserver:
    """A ppserver subprocess, its stderr collected line by line by a reader thread."""

    def __init__(self, args: list[str], env: dict[str, str], cwd: Path, module: str = "ppft_server") -> None:
        self.proc = subprocess.Popen(
            tied_to_this_process([sys.executable, "-m", module, *args]),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
            cwd=cwd,
            text=True,
        )
        self.pid = self.proc.pid
        self.lines: list[str] = []
        self._changed = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        self.seen_children: set[int] = set()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            with self._changed:
                self.lines.append(line.rstrip("\n"))
                self._changed.notify_all()
        with self._changed:
            self.lines.append("<EOF>")
            self._changed.notify_all()

    @property
    def stderr(self) -> str:
        with self._changed:
            return "\n".join(line for line in self.lines if line != "<EOF>")

    def wait_for_line(self, pattern: str, timeout: float = 15.0, start: int = 0) -> re.Match[str]:
        """The first stderr line (from line `start`) matching `pattern`; fails the test after `timeout`."""
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        with self._changed:
            index = start
            while True:
                while index < len(self.lines):
                    match = regex.search(self.lines[index])
                    if match:
                        return match
                    if self.lines[index] == "<EOF>":
                        pytest.fail(f"ppserver exited before printing {pattern!r}; stderr:\n{self.stderr}")
                    index += 1
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    pytest.fail(f"ppserver printed no {pattern!r} within {timeout} s; stderr:\n{self.stderr}")
                self._changed.wait(remaining)

    def wait_started(self, timeout: float = 15.0) -> tuple[int, int]:
        """Wait for the startup line; (port, workers)."""
        match = self.wait_for_line(STARTED.pattern, timeout)
        return int(match.group(3)), int(match.group(4))

    def workers(self, expected: int, timeout: float = 15.0) -> list[int]:
        """Its worker processes (its fork server's children, not the fork server), once `expected` run."""
        wait_until(lambda: len(self._workers()) >= expected, timeout, f"{expected} worker processes")
        return self._workers()

    def _workers(self) -> list[int]:
        kids = children_of(self.pid)
        pids = [pid for kid in kids for pid in (children_of(kid) if is_forkserver(kid) else [kid])]
        self.seen_children.update(kids + pids)
        return pids

    def wait(self, timeout: float = 15.0) -> int:
        """Its exit status, once it has exited and the reader thread has read its stderr to the end: the
        process may be gone before its last lines are read, and `stderr` must hold them."""
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            pytest.fail(f"ppserver {self.pid} did not exit within {timeout} s; stderr:\n{self.stderr}")
        self._reader.join(timeout)  # the end of the pipe: no process of it writes there any more
        if self._reader.is_alive():
            pytest.fail(f"ppserver {self.pid} exited, but its stderr stayed open {timeout} s (a child?)")
        return code

    def kill(self) -> None:
        """Kill the ppserver and every worker it was seen with, by PID."""
        if self.proc.poll() is None:
            self.seen_children.update(children_of(self.pid))
            self.proc.kill()
        self.proc.wait(10)
        for pid in self.seen_children:
            if pid_alive(pid):
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        self._reader.join(5)
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream is not None:
                stream.close()


StartPpserver = Callable[..., Ppserver]


@pytest.fixture
def start_ppserver(tmp_path: Path) -> Iterator[StartPpserver]:
    """Start `ppserver ARGS...` with HOME in the test's tmp_path and PPFT_SECRET set (unless `env` says
    otherwise); every ppserver started is killed, workers included, when the test ends."""
    started: list[Ppserver] = []

    def start(
        *args: str, env: dict[str, str | None] | None = None, nofile: int = 0, module: str = "ppft_server"
    ) -> Ppserver:
        full = dict(os.environ)
        full.update({"HOME": str(tmp_path), "PPFT_SECRET": SECRET})
        full.pop("PPFT_WORKERS_SECRET", None)
        if nofile:
            full["PPFT_TEST_NOFILE"] = str(nofile)
        for key, value in (env or {}).items():
            if value is None:
                full.pop(key, None)
            else:
                full[key] = value
        server = Ppserver(list(args), full, tmp_path, module)
        started.append(server)
        return server

    yield start
    for server in started:
        server.kill()


@pytest.fixture
def start_dialin(start_ppserver: StartPpserver) -> StartPpserver:
    """Start `python -m ppft_worker --connect 127.0.0.1:PORT ARGS...` (a dial-in worker), killed by PID (with
    its worker processes) at teardown; its stderr is collected like a ppserver's."""

    def start(port: int, *args: str, env: dict[str, str | None] | None = None) -> Ppserver:
        return start_ppserver("--connect", f"127.0.0.1:{port}", *args, env=env, module="ppft_worker")

    return start


@pytest.fixture(name="free_port")
def free_port_fixture() -> int:
    return free_port()


@pytest.fixture(name="wait_until")
def wait_until_fixture() -> Callable[..., None]:
    return wait_until


@pytest.fixture(name="children_of")
def children_of_fixture() -> Callable[[int], list[int]]:
    return children_of


@pytest.fixture(name="pid_alive")
def pid_alive_fixture() -> Callable[[int], bool]:
    return pid_alive


# -- raw protocol peers -------------------------------------------------------------------------------------

_DIGEST_TAG = b"ppft-function-body-v1\x00"  # the content address of a function (ppft_client.shipping)


def make_body(source: str, name: str, imports: tuple[str, ...] = ()) -> FunctionBody:
    """The FunctionBody a ppft client would send for the function `name` defined by `source`."""
    h = hashlib.sha256(_DIGEST_TAG)
    data = name.encode()
    h.update(struct.pack(">I", len(data)) + data)
    for items in ((source,), imports):
        h.update(struct.pack(">I", len(items)))
        for item in items:
            data = item.encode()
            h.update(struct.pack(">Q", len(data)) + data)
    h.update(struct.pack(">Q", 0))
    return FunctionBody(h.digest(), name, (source,), imports)


class RawPeer:
    """A protocol peer on a blocking socket that sends exactly what the test says: a client, or a dial-in
    worker (`worker=True`). `events` collects what the ppserver sent; `closed` is why it ended (None while
    open)."""

    def __init__(self, port: int, secret: str = SECRET, *, worker: bool = False,
                 versions: tuple[int, int] = (1, 2)) -> None:  # fmt: skip
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.conn = Connection(Role.CLIENT, secret, versions=versions, worker=worker)
        self.events: list[Event] = []
        self.closed: str | None = None
        self._sent = time.monotonic()
        self._flush()

    def _flush(self) -> None:
        data = self.conn.data_to_send()
        if data:
            self.sock.sendall(data)
            self._sent = time.monotonic()

    def send(self, *messages: Message) -> None:
        for message in messages:
            self.conn.send(message)
        self._flush()

    def pump(self, timeout: float = 0.2) -> None:
        """Take in what arrives within `timeout` seconds."""
        if self.closed is not None:
            return
        if time.monotonic() - self._sent > 1.0 and self.conn.state is State.ESTABLISHED:
            self.send(Heartbeat())  # as every peer does when it has nothing to say, so it is not dropped
        self.sock.settimeout(timeout)
        try:
            data = self.sock.recv(1 << 20)
        except (TimeoutError, BlockingIOError):
            return
        except OSError as exc:
            self.closed = f"connection broke: {exc}"
            return
        try:
            events = self.conn.receive_data(data)
        except ProtocolError as exc:
            self.closed = str(exc)
            return
        self.events += events
        for event in events:
            if isinstance(event, Closed):
                self.closed = event.reason
        self._flush()

    def wait_for(self, predicate: Callable[[RawPeer], bool], timeout: float = 15.0, what: str = "it") -> None:
        deadline = time.monotonic() + timeout
        while not predicate(self):
            if time.monotonic() > deadline:
                pytest.fail(f"timed out after {timeout} s waiting for {what}; got {self.events[-5:]}, "
                            f"closed: {self.closed}")  # fmt: skip
            if self.closed is not None and not predicate(self):
                pytest.fail(f"the ppserver closed the connection ({self.closed}) before {what}")
            self.pump()

    def wait_closed(self, timeout: float = 15.0) -> str:
        deadline = time.monotonic() + timeout
        while self.closed is None:
            if time.monotonic() > deadline:
                pytest.fail(f"the ppserver did not close the connection within {timeout} s")
            self.pump()
        return self.closed

    def established(self) -> RawPeer:
        self.wait_for(lambda p: any(isinstance(e, Established) for e in p.events), what="the handshake")
        return self

    def results(self) -> dict[int, Result]:
        return {r.job_id: r for e in self.events if isinstance(e, ResultBatch) for r in e.results}

    def run(self, body: FunctionBody, *args_list: tuple[object, ...], first_id: int = 1) -> list[Result]:
        """Send `body` and one job per argument tuple; wait for their results, in job order."""
        import pickle

        jobs = tuple(
            Job(first_id + i, body.digest, pickle.dumps(args), 5) for i, args in enumerate(args_list)
        )
        self.send(body, JobBatch(jobs))
        ids = [job.job_id for job in jobs]
        self.wait_for(lambda p: all(i in p.results() for i in ids), what=f"results of jobs {ids}")
        results = self.results()
        return [results[i] for i in ids]

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass


@pytest.fixture
def connect() -> Iterator[Callable[..., RawPeer]]:
    """`connect(port, secret=..., worker=False, versions=(1, 2))`: raw peers, closed at teardown."""
    peers: list[RawPeer] = []

    def make(port: int, secret: str = SECRET, **kwargs: object) -> RawPeer:
        peer = RawPeer(port, secret, **kwargs)  # type: ignore[arg-type]
        peers.append(peer)
        return peer

    yield make
    for peer in peers:
        peer.close()


@pytest.fixture(name="make_body")
def make_body_fixture() -> Callable[..., FunctionBody]:
    return make_body


ECHO = make_body("def echo(x):\n    return x\n", "echo")
"""A function every test can run: returns its argument."""

SLEEP = make_body(
    "def nap(seconds, mark=None):\n"
    "    if mark:\n"
    "        open(mark, 'w').close()\n"
    "    time.sleep(seconds)\n"
    "    return seconds\n",
    "nap",
    ("time",),
)
"""Sleeps `seconds`; first creates the file `mark`, if given, so a test knows the job started."""


GATE = make_body(
    "def gate(path):\n    while not os.path.exists(path):\n        time.sleep(0.01)\n    return path\n",
    "gate",
    ("os", "time"),
)
"""Returns once the file `path` exists: holds a worker until the test lets it go."""

BIG = make_body("def big(n, seconds=0.0):\n    time.sleep(seconds)\n    return b'x' * n\n", "big", ("time",))
"""Returns `n` bytes, after `seconds`."""


@pytest.fixture(name="bodies")
def bodies_fixture() -> dict[str, FunctionBody]:
    return {"echo": ECHO, "nap": SLEEP, "gate": GATE, "big": BIG}


@pytest.fixture(name="nofile_limit")
def nofile_limit_fixture() -> int:
    """This process's own soft open-files limit."""
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


@pytest.fixture
def config_file(tmp_path: Path) -> Callable[..., str]:
    """Write a ppserver config file (private, as one holding a secret must be) and give its path."""

    def write(text: str, name: str = "ppserver.ini") -> str:
        path = tmp_path / name
        path.write_text(text)
        path.chmod(0o600)
        return str(path)

    return write


# -- main() with a stand-in server ------------------------------------------------------------------------


class FakeServer:
    """Records how main() built it; serves by returning at once."""

    made: list[FakeServer] = []

    def __init__(self, **kwargs: Any) -> None:
        self.kwargs = kwargs
        self.name = "fake"
        self.served = False
        FakeServer.made.append(self)

    def bind(self) -> tuple[str, int]:
        return ("127.0.0.1", 1234)

    def serve_forever(self) -> None:
        self.served = True

    def stop(self, reason: str = "") -> None:
        pass


@pytest.fixture
def fake_server(monkeypatch: pytest.MonkeyPatch) -> Iterator[type[FakeServer]]:
    """`ppft_server.cli.main` builds a `FakeServer` instead of a `NodeServer`: the tests read what it was
    given; the process's logging, which main() configures, is given back afterwards."""
    import logging

    import ppft_server.node

    monkeypatch.setattr(ppft_server.node, "NodeServer", FakeServer)
    FakeServer.made = []
    ppft = logging.getLogger("ppft")
    saved = (list(ppft.handlers), ppft.propagate, ppft.level, logging.getLogger("ppft.ppserver").level)
    try:
        yield FakeServer
    finally:  # main() configures logging for a process; give the test process its own back
        ppft.handlers[:], ppft.propagate, ppft.level = saved[0], saved[1], saved[2]
        logging.getLogger("ppft.ppserver").setLevel(saved[3])
