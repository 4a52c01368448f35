"""A `Server()` that fails to start leaves nothing running: no thread, no worker process, whatever failed
and however far it had got (counted before and after, in this very process)."""

from __future__ import annotations

import os
import threading

import pytest

import ppft_client
from ppft_client import scheduler as scheduler_module
from ppft_worker.errors import SecretFileError


def live_children() -> set[int]:
    kids: set[int] = set()
    for task in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{task}/children") as f:
                kids.update(int(pid) for pid in f.read().split())
        except FileNotFoundError:
            continue
    return {pid for pid in kids if _alive(pid)}


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except (FileNotFoundError, IndexError):
        return False


def running() -> tuple[set[int], set[int]]:
    return {thread.ident or 0 for thread in threading.enumerate()}, live_children()


@pytest.fixture
def nothing_left(wait_until):
    """Call it once `Server()` failed: the threads and child processes must be those from before it."""
    before = running()

    def check() -> None:
        wait_until(lambda: running() == before, 15, "the threads and children of before the failed start")

    return check


def test_a_bad_secret_file_leaves_nothing_running(nothing_left, tmp_path, monkeypatch):
    monkeypatch.delenv("PPFT_SECRET", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    secret = tmp_path / ".ppft" / "secret"
    secret.parent.mkdir()
    secret.write_bytes(b"readable by everyone")
    secret.chmod(0o644)
    with pytest.raises(SecretFileError, match="secret"):
        ppft_client.Server(2, ppservers=("127.0.0.1:1",))  # the local workers start before the secret is read
    nothing_left()


def test_an_address_refused_once_workers_run_leaves_nothing_running(nothing_left, monkeypatch):
    def refuse(*args, **kwargs):
        raise ValueError("ppservers entry 'a..b:60000': not a valid host name")

    monkeypatch.setattr(scheduler_module.Scheduler, "add_remote", refuse)
    with pytest.raises(ValueError, match=r"a\.\.b:60000"):
        ppft_client.Server(2, ppservers=("a..b:60000",), secret="x")
    nothing_left()


def test_a_dask_entry_that_fails_leaves_nothing_running(nothing_left, monkeypatch):
    pytest.importorskip("distributed")
    import ppft_client.nodes

    def fail(scheduler, entries):
        raise RuntimeError("dask entry failed")

    monkeypatch.setattr(ppft_client.nodes, "add_dask_nodes", fail)  # the name Server imports
    with pytest.raises(RuntimeError, match="dask entry failed"):
        ppft_client.Server(2, ppservers=("dask://127.0.0.1:1",), secret="x")
    nothing_left()


NO_IO_THREAD = """
import os, threading, time
import ppft_client

start = threading.Thread.start

def no_io_thread(self):
    if self.name == "ppft-io":
        raise RuntimeError("can't start new thread")
    start(self)

threading.Thread.start = no_io_thread
try:
    ppft_client.Server(2, secret="x")  # the only thread: its workers are forked before the I/O thread starts
except RuntimeError as exc:
    print("raised:", exc)

def alive_children():
    kids = []
    for task in os.listdir("/proc/self/task"):
        with open(f"/proc/self/task/{task}/children") as f:
            kids += f.read().split()
    alive = []
    for pid in kids:
        with open(f"/proc/{pid}/stat") as f:
            if f.read().rsplit(")", 1)[1].split()[0] not in "ZX":
                alive.append(pid)
    return alive

deadline = time.monotonic() + 15
while alive_children() and time.monotonic() < deadline:
    time.sleep(0.05)
print("children:", len(alive_children()), "threads:", threading.active_count())
"""


def test_no_thread_for_the_io_loop_leaves_no_worker_running(run_script):
    proc = run_script(NO_IO_THREAD)
    out, err = proc.communicate(timeout=60)
    assert out.splitlines() == ["raised: can't start new thread", "children: 0 threads: 1"], err


@pytest.mark.parametrize("ncpus", ["many", 2.5, None, -1])
def test_ncpus_of_a_wrong_type_or_value_leaves_nothing_running(nothing_left, ncpus):
    with pytest.raises((TypeError, ValueError)):
        ppft_client.Server(ncpus, secret="x")
    nothing_left()


def test_an_executor_that_fails_to_start_leaves_nothing_running(nothing_left, tmp_path, monkeypatch):
    monkeypatch.delenv("PPFT_SECRET", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / ".ppft").mkdir()
    (tmp_path / ".ppft" / "secret").write_bytes(b"x")
    (tmp_path / ".ppft" / "secret").chmod(0o666)
    with pytest.raises(SecretFileError):
        ppft_client.Executor(2, ppservers=("127.0.0.1:1",))
    nothing_left()
