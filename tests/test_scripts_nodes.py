"""Nodes as users meet them, from script files: a bad address, jobs waiting for a node, and no usable node."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from clusterlib import Cluster, free_port
from scriptlib import HOWS, run_script


@pytest.fixture
def ppserver(tmp_path: Path) -> Iterator[str]:
    """A real ppserver (the test cluster's secret), ended by PID at teardown; its address."""
    cluster = Cluster(tmp_path)
    try:
        yield cluster.ppserver(workers=2).address
    finally:
        cluster.close()


@pytest.mark.parametrize("how", HOWS)
def test_a_bad_address_is_a_value_error_naming_the_entry(script_mode: dict[str, str], how: str) -> None:
    ran = run_script("bad_address.py", how=how, env=script_mode).check()
    first, value = ran.stdout.splitlines()
    assert first.startswith(
        "ValueError: ppservers entry 'node1..example.org:60000': 'node1..example.org' is not a valid host"
    )
    assert "an empty label" in first
    assert value == "3"
    assert "internal error" not in ran.stderr and "Traceback" not in ran.stderr


def test_jobs_waiting_for_a_node_say_so_and_run_when_one_comes(ppserver: str) -> None:
    nobody = f"127.0.0.1:{free_port()}"
    env = {"PPSERVER": ppserver, "NOBODY": nobody, "WAIT_REPORT_INTERVAL": "0.5"}
    ran = run_script("waiting_for_a_node.py", env=env).check()
    assert ran.stdout.splitlines() == ["done before a node came: False", "[1, 2, 4]"]
    assert f"3 job(s) waiting for 0.5 s: no usable node ({nobody}: connection refused)" in ran.stderr
    assert f"3 job(s) waiting for 1 s: no usable node ({nobody}: connection refused)" in ran.stderr


def test_no_usable_node_fails_the_job_with_no_node_error(ppserver: str) -> None:
    ran = run_script("no_usable_node.py", env={"PPSERVER": ppserver}).check()
    lines = ran.stdout.splitlines()
    assert lines[0].startswith(
        "NoNodeError: no node can run the job: there are no local workers (ncpus=0), and the ppserver "
        "refused this client for a reason that retrying will not cure:"
    )
    assert lines[1].startswith(f"  {ppserver}: wrong secret: ")
    assert lines[-1] == "1"
