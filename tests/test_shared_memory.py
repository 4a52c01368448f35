"""Shared memory between the client and its local workers (`ppft_worker.mapped`): large arrays and bytes in
and out of jobs, run as users run them (a script file); the same results through the pipes with
PPFT_SEGMENTS=0; and a worker killed while it holds segments leaks none. The same between a real ppserver
(sealed or not), a dial-in worker or an ssh node's server and its own workers, where mapped fields never
reach the client."""

from __future__ import annotations

from pathlib import Path

import pytest

from clusterlib import ACCEPT_WORKERS, Cluster, Proc
from ppft_worker.segments import segments_available
from scriptlib import run_script
from sshlib import Sshd
from sshlib import sshd as sshd  # noqa: PLC0414 - the fixture

pytest.importorskip("numpy")
pytestmark = pytest.mark.skipif(not segments_available(), reason="shared segments need Linux memfd and /proc")

EXPECTED = (
    "shared: {shared}\n"
    "echo equal: True writable: True dtype: float64\n"
    "original kept: True\n"
    "in place: [1. 2. 3.] original kept: [0. 1. 2.]\n"
    "read-only stays read-only: True\n"
    "bytes: bytes True\n"
    "several: [(2097152,), (262144,), (3,)] True\n"
    "template: True\n"
    "workers hold none: 0\n"
    "executor submit: True\n"
    "executor map: True\n"
    "client holds: (0, 0) 0 0\n"
)


def test_large_arrays_travel_through_shared_memory_with_local_workers() -> None:
    ran = run_script("shared_memory.py", env={"PPFT_SEGMENTS": ""}).check()
    assert ran.stdout == EXPECTED.format(shared=True)


def test_ppft_segments_0_gives_the_same_results_through_the_pipes() -> None:
    ran = run_script("shared_memory.py", env={"PPFT_SEGMENTS": "0"}).check()
    assert ran.stdout == EXPECTED.format(shared=False)


def test_a_worker_killed_while_it_holds_segments_leaks_none(tmp_path: Path) -> None:
    env = {"PPFT_SEGMENTS": "", "MARKER": str(tmp_path / "killed")}
    ran = run_script("shared_memory_worker_killed.py", env=env).check()
    assert ran.stdout == (
        "value: True\n"
        "rerun: True on another worker: True\n"
        "dead worker gone: True\n"
        "replacement holds: 0\n"
        "client holds open: (0, 0) 0\n"
        "client maps: 0\n"
    )


RELAYED = (
    "echo equal: True writable: True\n"
    "worker read (MiB): {worker}\n"
    "ppserver read (MiB): {server}\n"
    "ppserver held a segment while the job ran: {shared}\n"
    "ppserver holds afterwards: 0\n"
    "the client got a buffered pickle: True a mapped field: False\n"
    "the client made segments: 0\n"
    "killed: WorkerLostError\n"
    "after the kill the ppserver holds: 0 and its descriptors as before\n"
    "timed out: JobTimeoutError\n"
    "after the timeout the ppserver holds: 0\n"
)
TERMINATED = "terminated: True\nafter terminate the ppserver holds: 0\n"


def _relayed(
    holder: Proc | None,
    address: str,
    seal: bool,
    segments: bool,
    stdin: int = 0,
    env: dict[str, str] | None = None,
) -> None:
    """`holder`: the process of the pool (None: the workers' parent); `stdin`: MiB it reads from its stdin
    (an ssh node's server: the argument)."""
    env = {
        **(env or {}),
        "PPSERVER": address,
        "SEAL": "1" if seal else "0",
        "PPFT_SEGMENTS": "" if segments else "0",
    }
    if holder is not None:
        env["PPSERVER_PID"] = str(holder.pid)
    ran = run_script("shared_memory_ppserver.py", env=env, timeout=120).check()
    piped = 0 if segments else 16
    shared = RELAYED.format(worker=piped, server=piped + stdin, shared=segments)
    if env.get("LIMITS") == "0":
        shared = shared[: shared.index("timed out:")]
    elif segments:
        shared += TERMINATED
    assert ran.stdout == shared + "client mapped: 0\n"


@pytest.mark.parametrize(
    ("seal", "segments"), [(True, True), (False, True), (True, False)], ids=["sealed", "unsealed", "off"]
)
def test_a_ppserver_and_its_workers_pass_big_arrays_through_shared_memory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, seal: bool, segments: bool
) -> None:
    """A 16 MiB echo through a real ppserver: neither pipe on its machine carries the array (the worker's and
    the ppserver's `rchar` show it; with PPFT_SEGMENTS=0 both do), the client gets a buffered pickle, and a
    killed worker, a timed-out job and a terminated one leave no segment in the ppserver."""
    monkeypatch.setenv("PPFT_SEGMENTS", "" if segments else "0")  # the ppserver's environment
    cluster = Cluster(tmp_path)
    try:
        # the jobs go through the ppserver (no direct worker links), whose segments are what is tested here
        relay = ("--direct-workers", "0")
        server = cluster.ppserver(1, extra=relay if seal else (*relay, "--allow-plain-loopback"))
        _relayed(server, server.address, seal, segments)
    finally:
        cluster.close()


def test_a_dial_in_worker_and_its_workers_pass_big_arrays_through_shared_memory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same through a ppserver with no workers of its own and a dial-in worker: the dial-in worker's
    pool and its worker share the segments."""
    monkeypatch.setenv("PPFT_SEGMENTS", "")
    cluster = Cluster(tmp_path)
    try:
        server = cluster.ppserver(workers=0, extra=ACCEPT_WORKERS)
        dialin = cluster.dialin(server)  # the client's jobs wait in the ppserver's queue until it joins
        _relayed(dialin, server.address, True, True)
    finally:
        cluster.close()


def test_an_ssh_nodes_server_and_its_workers_pass_big_arrays_through_shared_memory(sshd: Sshd) -> None:
    """The same on an ssh node (a real sshd): its server reads the argument from its stdin (16 MiB), and
    nothing more from its worker."""
    from test_ssh_scripts import ssh_mode

    env = ssh_mode(sshd, workers=1)
    _relayed(None, env.pop("PPSERVER"), True, True, stdin=16, env=env)
