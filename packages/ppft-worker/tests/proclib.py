"""Processes and ports for every package's tests and the top-level ones (on pytest's pythonpath, as
`proclib`; the ppserver's conftest gives them as fixtures too): the children of a process, whether one is
alive or a fork server, waiting with a deadline, free ports; all read from /proc, with no `ps` needed. It
lives with the worker's tests because every other package's tests may import those."""

from __future__ import annotations

import contextlib
import os
import random
import socket
import sys
import time
from collections.abc import Callable

import pytest

__all__ = [
    "children_of",
    "ephemeral_ports",
    "free_port",
    "is_forkserver",
    "pid_alive",
    "tied_to_this_process",
    "wait_until",
]


_TIED = (
    "import ctypes, os, signal, sys; ctypes.CDLL(None).prctl(1, signal.SIGKILL); "
    "os.execv(sys.argv[1], sys.argv[1:])"
)


def tied_to_this_process(argv: list[str]) -> list[str]:
    """`argv`, started through a trampoline that sets PR_SET_PDEATHSIG and then execs it: the daemon a
    test starts is SIGKILLed when the test process dies, even when a timeout ends it without running
    fixture teardown (the setting survives exec; no preexec_fn in a threaded process)."""
    return [sys.executable, "-c", _TIED, *argv]


def children_of(pid: int) -> list[int]:
    """The live child processes of `pid` (read from /proc: no `ps` needed)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid and fields[0] not in ("Z", "X"):
            found.append(int(entry))
    return found


def pid_alive(pid: int) -> bool:
    """True while `pid` is a running (not zombie) process."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")


def wait_until(predicate: Callable[[], bool], timeout: float = 10.0, what: str = "condition") -> None:
    """Poll `predicate` until it holds; fail the test after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.01)


def ephemeral_ports() -> range:
    """The kernel's ephemeral port range: where ports bound to 0 and outgoing connections' ports come from."""
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            low, high = (int(field) for field in f.read().split())
    except (OSError, ValueError):
        low, high = 32768, 60999
    return range(low, high + 1)


def _port_block() -> range:
    """The ports this test process may hand out: below the kernel's ephemeral range, and one block of them
    per pytest-xdist worker.

    A port found by binding port 0 comes from the ephemeral range, and between closing that socket and the
    daemon's listen() the kernel may give the same port to any outgoing connection on the machine (a CI run
    failed so: "cannot listen on 127.0.0.1:33653: Address already in use"). A port below that range is never
    chosen by the kernel, and the blocks keep two xdist workers from choosing the same one."""
    ephemeral = ephemeral_ports()
    start, end = (10000, ephemeral.start) if ephemeral.start >= 12000 else (ephemeral.stop, 65536)
    workers = max(1, int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")))
    worker = int(os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw") or 0) % workers
    size = (end - start) // workers
    return range(start + worker * size, start + (worker + 1) * size)


_PORTS = _port_block()
_next_port = [random.randrange(len(_PORTS))]


def free_port() -> int:
    """A TCP port on 127.0.0.1 nobody listens on, whose UDP twin is free too (for -a): checked by binding it,
    taken from this process's block in turn (see `_port_block`), so no port is handed out twice until the
    block wraps round."""
    for _ in range(200):
        port = _PORTS[_next_port[0] % len(_PORTS)]
        _next_port[0] += 1
        try:
            with socket.socket() as tcp, socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
                tcp.bind(("127.0.0.1", port))
                udp.bind(("", port))
        except OSError:
            continue
        return port
    raise AssertionError(f"no free port found in {_PORTS}")


def is_forkserver(pid: int) -> bool:
    """Whether process `pid` is a ppft fork server (`ppft_worker.process.forkserver`)."""
    with contextlib.suppress(OSError), open(f"/proc/{pid}/cmdline", "rb") as f:
        return b"ppft_worker.process.forkserver" in f.read()
    return False
