"""Shared memory between the client and its local workers (`ppft_worker.mapped`): large arrays and bytes in
and out of jobs, run as users run them (a script file); the same results through the pipes with
PPFT_SEGMENTS=0; and a worker killed while it holds segments leaks none."""

from __future__ import annotations

from pathlib import Path

import pytest

from ppft_worker.segments import segments_available
from scriptlib import run_script

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
