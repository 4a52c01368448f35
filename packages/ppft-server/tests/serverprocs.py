"""Processes and ports for the ppserver's tests (`conftest.py` gives them as fixtures too): the children of a
process, whether one is alive or a fork server, waiting with a deadline, free ports; all read from /proc, with
no `ps` needed."""

from __future__ import annotations

import contextlib
import os
import socket
import time
from collections.abc import Callable

import pytest

__all__ = ["children_of", "free_port", "is_forkserver", "pid_alive", "wait_until"]


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


def free_port() -> int:
    """A TCP port on 127.0.0.1 nobody listens on, whose UDP twin is free too (for -a)."""
    for _ in range(50):
        with socket.socket() as tcp:
            tcp.bind(("127.0.0.1", 0))
            port = tcp.getsockname()[1]
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            try:
                udp.bind(("", port))
            except OSError:
                continue
        return port
    raise AssertionError("no free port found")


def is_forkserver(pid: int) -> bool:
    """Whether process `pid` is a ppft fork server (`ppft_worker.process.forkserver`)."""
    with contextlib.suppress(OSError), open(f"/proc/{pid}/cmdline", "rb") as f:
        return b"ppft_worker.process.forkserver" in f.read()
    return False
