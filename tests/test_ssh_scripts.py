"""User scripts, run as users run them (`python script.py`, -c, stdin), with their jobs on an ssh node: the
entry `ssh://ppft-test-node?python=...` as a user whose ~/.ssh/config names the host writes it, reached by
the default command `ssh` (here a PATH whose ssh reads the test sshd's own client config). And a user's
program SIGKILLed while its jobs run leaves nothing on the remote machine."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from clusterlib import SECRET, pid_alive, tied_to_this_process, wait_until
from scriptlib import HOWS, SCRIPTS, run_script
from sshlib import ALIAS, Sshd, cmdline
from sshlib import module_sshd as module_sshd  # noqa: PLC0414 - the fixture
from test_scripts_output import _run_with

pytestmark = pytest.mark.timeout(240)


def ssh_mode(sshd: Sshd, workers: int = 2) -> dict[str, str]:
    return {"PPSERVER": f"ssh://{ALIAS}?python={sys.executable}&workers={workers}", **sshd.env()}


@pytest.mark.parametrize("how", HOWS)
def test_a_plain_script_runs_its_jobs_on_an_ssh_node(module_sshd: Sshd, how: str) -> None:
    ran = run_script("basic_jobs.py", how=how, env=ssh_mode(module_sshd)).check()
    assert ran.stdout.splitlines() == ["1.0", "[4, 25, 168]"]


def test_print_stats_from_a_script_names_the_ssh_node(module_sshd: Sshd) -> None:
    lines = run_script("stats_table.py", env=ssh_mode(module_sshd)).check().stdout.splitlines()
    assert lines[0] == "285"
    assert lines[3].endswith(f"| ssh://{ALIAS}") and lines[3].split()[0] == "10"
    assert lines[5] == "0 active tasks, 2 cores (0 local, 2 on 1 remote node)"


@pytest.mark.parametrize("script", ["output_streams.py", "exception_kinds.py", "lambdas_and_closures.py"])
def test_a_script_prints_the_same_through_an_ssh_node_as_on_local_workers(
    module_sshd: Sshd, script: str
) -> None:
    local = run_script(script).check()
    remote = run_script(script, env=ssh_mode(module_sshd)).check()
    assert remote.stdout == local.stdout
    assert remote.stderr == local.stderr


def test_live_output_of_an_ssh_node_shows_while_the_job_runs(module_sshd: Sshd, tmp_path: Path) -> None:
    marker = tmp_path / "seen"
    node = f"ssh://{ALIAS}"
    first = f"[job 0 on {node}] step 1 of 2\n"
    env = {**ssh_mode(module_sshd, workers=1), "MARKER": str(marker)}
    ran = _run_with([sys.executable, str(SCRIPTS / "output_live.py")], env, when_seen={first: marker})
    assert ran.returncode == 0, ran.stderr
    assert (
        ran.stdout
        == f"{first}[job 0 on {node}] step 2 of 2\n[job 0 on {node}] finished\nvalue 42\nagain 42\n"
    )
    assert ran.stderr == f"[job 0 on {node}] a warning on the way\n"


def test_a_sigkilled_client_leaves_nothing_on_the_remote(module_sshd: Sshd, tmp_path: Path) -> None:
    mark = tmp_path / "started"
    env = dict(os.environ, PPFT_SECRET=SECRET, **ssh_mode(module_sshd))
    user = subprocess.Popen(
        tied_to_this_process([sys.executable, str(SCRIPTS / "long_job_then_killed.py"), str(mark)]),
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        wait_until(lambda: mark.exists() or user.poll() is not None, 60, "the long job to start")
        assert user.poll() is None, user.communicate(timeout=10)
        ssh = [
            pid for pid in _all_pids() if ALIAS in cmdline(pid) and cmdline(pid).startswith("/usr/bin/ssh")
        ]
        assert ssh, "the client's ssh process"
        remote = [pid for pid in module_sshd.processes() if "ppft" in cmdline(pid)]
        assert len(remote) == 3  # the --stdio process and its 2 workers, one of them in the long job
        user.send_signal(signal.SIGKILL)
        user.wait(10)
    finally:
        if user.poll() is None:
            user.kill()
        user.communicate(timeout=10)
    wait_until(
        lambda: not any(pid_alive(pid) for pid in remote),
        30,
        f"the remote side to exit: {module_sshd.ours()}",
    )
    wait_until(lambda: not any(pid_alive(pid) for pid in ssh), 30, "the client's ssh to exit")


def _all_pids() -> list[int]:
    return [int(name) for name in os.listdir("/proc") if name.isdigit()]


@pytest.mark.parametrize("seal", ["no", "yes"])
def test_big_arrays_travel_out_of_band_through_an_ssh_node(module_sshd: Sshd, seal: str) -> None:
    """The 16 MiB numpy arrays of `big_arrays.py` in and out of jobs on an ssh node, as buffered pickles
    (protocol version 2) through the ssh channel, with and without ppft's own sealing on top of ssh's."""
    pytest.importorskip("numpy")
    from test_bigdata import EXPECTED

    env = ssh_mode(module_sshd)
    env["PPSERVER"] += f"&seal={seal}"
    ran = run_script("big_arrays.py", env=env).check()
    assert ran.stdout == EXPECTED.format(oob=True)
