"""Big data: numpy arrays in and out of jobs with out-of-band buffers (protocol version 2), run as users run
them (a script file) on local workers, a real ppserver (sealed), and a ppserver that speaks version 1 only
(ppft 2.0.0), which gets plain pickles, exactly version 1's bytes."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from clusterlib import ACCEPT_WORKERS, SECRET, Cluster, free_port, listening, wait_until
from scriptlib import PROTOCOL_1, PROTOCOL_1_PPSERVER, SCRIPTS, run_script

pytest.importorskip("numpy")

EXPECTED = (
    "echo equal: True writable: True dtype: float64\n"
    "out of band: {oob}\n"
    "in place: [1. 1. 1.]\n"
    "made: [0 1 2 3 4]\n"
    "made big: 999999 out of band: {oob}\n"
    "several: [('<f8', (300, 400), 120000.0), ('<f8', (10,), 10.0), ('<f4', (2, 25000), 50000.0)]\n"
    "one object twice: True\n"
    "as at submit: [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]\n"
    "tiny: 3\n"
    "template: True\n"
    "executor submit: True\n"
    "executor map: True\n"
)


def test_big_arrays_travel_out_of_band(script_mode: dict[str, str]) -> None:
    ran = run_script("big_arrays.py", env=script_mode).check()
    assert ran.stdout == EXPECTED.format(oob=True)


def test_big_arrays_on_a_version_1_ppserver_travel_as_plain_pickles(
    protocol_1_ppserver: dict[str, str],
) -> None:
    ran = run_script("big_arrays.py", env=protocol_1_ppserver).check()
    assert ran.stdout == EXPECTED.format(oob=False)


_PROTOCOL_1_DIALIN = (
    PROTOCOL_1 + "import runpy, sys\nsys.argv[0] = 'ppft-worker'\n"
    "runpy.run_module('ppft_worker', run_name='__main__', alter_sys=True)\n"
)


@pytest.mark.parametrize("version", [2, 1])
def test_big_arrays_through_a_dial_in_worker(tmp_path: Path, version: int) -> None:
    """A ppserver with no workers of its own passes the client's buffered arguments on to a dial-in worker:
    as they came to one of version 2, rewritten as plain pickles for one of version 1 (ppft 2.0.0)."""
    cluster = Cluster(tmp_path)
    try:
        server = cluster.ppserver(workers=0, extra=ACCEPT_WORKERS)
        if version == 2:
            cluster.dialin(server)
        else:
            argv = [sys.executable, "-c", _PROTOCOL_1_DIALIN, "--connect", server.address, "-w", "1"]
            cluster._spawn([*argv, "-s", SECRET], "dialin-v1")
        ran = run_script("big_arrays.py", env={"PPSERVER": server.address}).check()
        assert ran.stdout == EXPECTED.format(oob=version == 2)
    finally:
        cluster.close()


_PROTOCOL_1_CLIENT = PROTOCOL_1 + "import runpy, sys\nrunpy.run_path(sys.argv[1], run_name='__main__')\n"


def test_a_version_1_client_of_a_version_2_ppserver_gets_plain_pickles(tmp_path: Path) -> None:
    """The ppserver's workers answer with buffered values; to a client of ppft 2.0.0 (version 1) the
    ppserver passes them on as plain pickles."""
    cluster = Cluster(tmp_path)
    try:
        server = cluster.ppserver(workers=2)
        script = tmp_path / "big_arrays_v1.py"
        script.write_text(
            f"import sys\nsys.argv = ['x', {str(SCRIPTS / 'big_arrays.py')!r}]\n{_PROTOCOL_1_CLIENT}",
            encoding="utf-8",
        )
        ran = run_script(script, env={"PPSERVER": server.address}).check()
        assert ran.stdout == EXPECTED.format(oob=False)
    finally:
        cluster.close()


def test_a_dial_in_worker_of_a_version_1_ppserver_sends_plain_pickles(tmp_path: Path) -> None:
    """This version's dial-in worker, serving a ppserver of ppft 2.0.0: its workers' buffered values go up
    as plain pickles."""
    cluster = Cluster(tmp_path)
    try:
        port = free_port()
        argv = [sys.executable, "-c", PROTOCOL_1_PPSERVER, "-p", str(port), "-i", "127.0.0.1", "-w", "0"]
        proc = cluster._spawn([*argv, "-s", SECRET, *ACCEPT_WORKERS], "ppserver-v1")
        wait_until(lambda: listening(port) or proc.popen.poll() is not None, 30, f"ppserver on {port}")
        proc.port = port
        cluster.dialin(proc)
        ran = run_script("big_arrays.py", env={"PPSERVER": f"127.0.0.1:{port}"}).check()
        assert ran.stdout == EXPECTED.format(oob=False)
    finally:
        cluster.close()
