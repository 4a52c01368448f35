"""docs/cluster.md's Slurm example, run as its own lines say, with a stand-in for `srun`.

The batch script and `my_jobs.py` are read from the page (the blocks it says to save), not copied here, so
the page cannot drift from what runs. Slurm itself is not needed: a tiny `srun` on PATH runs its command
once per node (`SLURM_NNODES`) with the SLURM_* variables a task sees, and `hostname` answers 127.0.0.1.
HOME is the test's own folder, so the hub creates `~/.ppft/secret` there and every process finds it, as
on a cluster whose home directory is shared. What must hold: the job's jobs all return, and when the
script ends its hub stops and every dial-in process leaves with status 0 (which ends the `srun` step), with
no process left behind. Every process the script starts is ended by its PID at teardown, even on failure.
"""

from __future__ import annotations

import os
import random
import signal
import socket
import subprocess
from pathlib import Path

import pytest
from proclib import ephemeral_ports

from clusterlib import pid_alive, wait_until
from docslib import ROOT, VENV_BIN, parse_page

SRUN = """\
#!/bin/bash
# A stand-in for Slurm's srun: the command once per node ($SLURM_NNODES), each with its task's variables.
while [[ $# -gt 0 && $1 == -* ]]; do shift; done       # srun's own options (--ntasks-per-node=1)
echo "srun $$" >> "$FAKE_SLURM_PIDS"
pids=()
for ((i = 0; i < SLURM_NNODES; i++)); do
    SLURM_PROCID=$i SLURM_NODEID=$i SLURM_LOCALID=0 SLURM_STEP_ID=0 "$@" &
    pids+=("$!")
    echo "task $!" >> "$FAKE_SLURM_PIDS"
done
status=0
for pid in "${pids[@]}"; do
    wait "$pid"; code=$?
    echo "$pid $code" >> "$FAKE_SLURM_STATUS"
    [ "$code" -eq 0 ] || status=$code
done
exit "$status"
"""

HOSTNAME = "#!/bin/sh\necho 127.0.0.1\n"
NODES = 2


def saved_blocks(page: Path) -> dict[str, str]:
    return {b.save_as: b.text for b in parse_page(page) if b.save_as and b.not_run is None}


def job_id_with_a_free_port() -> tuple[int, int]:
    """A SLURM_JOB_ID whose port (20000 + id % 20000, the script's rule) is free, and that port: one below
    the kernel's ephemeral range (`proclib.free_port` says why), checked by binding it."""
    ports = range(20000, min(40000, ephemeral_ports().start))
    for _ in range(200):
        port = random.choice(ports)
        job_id = 900000 + port - 20000  # 900000 % 20000 == 0
        if Path(f"/tmp/ppserver-{job_id}.pid").exists():
            continue
        with socket.socket() as s:
            try:
                s.bind(("0.0.0.0", port))
            except OSError:
                continue
        return job_id, port
    pytest.fail(f"no free port in {ports}")


def test_slurm_example_runs_and_its_dial_ins_leave_with_the_hub(
    tmp_path: Path, stray_pids: list[int]
) -> None:
    files = saved_blocks(ROOT / "docs" / "cluster.md")
    script = files["ppft-job.sh"]
    assert script.startswith("#!/bin/bash\n#SBATCH") and "srun --ntasks-per-node=1 ppft-worker" in script
    (tmp_path / "ppft-job.sh").write_text(script + "\n")
    (tmp_path / "my_jobs.py").write_text(files["my_jobs.py"] + "\n")
    fake = tmp_path / "fake-slurm"
    fake.mkdir()
    for name, text in (("srun", SRUN), ("hostname", HOSTNAME)):
        (fake / name).write_text(text)
        (fake / name).chmod(0o755)
    home = tmp_path / "home"
    home.mkdir()
    job_id, port = job_id_with_a_free_port()
    pidfile = Path(f"/tmp/ppserver-{job_id}.pid")
    pids_file, status_file = tmp_path / "pids", tmp_path / "status"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PPFT_", "SLURM_"))}
    env.update(
        PATH=f"{fake}{os.pathsep}{VENV_BIN}{os.pathsep}{env.get('PATH', '')}",
        HOME=str(home),
        SLURM_JOB_ID=str(job_id),
        SLURM_NNODES=str(NODES),
        SLURM_JOB_NUM_NODES=str(NODES),
        SLURM_CPUS_PER_TASK="1",
        FAKE_SLURM_PIDS=str(pids_file),
        FAKE_SLURM_STATUS=str(status_file),
    )
    with open(tmp_path / "job.out", "wb") as out:
        batch = subprocess.Popen(
            ["bash", "ppft-job.sh"], cwd=tmp_path, env=env, stdin=subprocess.DEVNULL, stdout=out,
            stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    stray_pids.append(batch.pid)
    hub = 0
    try:

        def hub_started() -> bool:
            nonlocal hub
            text = pidfile.read_text().strip() if pidfile.exists() else ""
            hub = int(text) if text.isdigit() else 0
            return bool(hub) or batch.poll() is not None

        wait_until(hub_started, 60, "the hub's pid file")
        stray_pids.append(hub)
        try:
            code = batch.wait(180)
        except subprocess.TimeoutExpired:
            pytest.fail("the batch script ran over 180 s:\n" + (tmp_path / "job.out").read_text())
        output = (tmp_path / "job.out").read_text()
        assert code == 0, output
        assert hub, output
        lines = output.splitlines()
        assert "332833500" in lines, output
        assert "     1000 |        100.00 |" in output and f"| 127.0.0.1:{port}" in output, output
        # The script has ended and its trap stopped the hub: the dial-ins leave, status 0, and srun ends.
        launched = [line.split() for line in pids_file.read_text().splitlines()]
        stray_pids.extend(int(pid) for _, pid in launched)
        assert sorted(kind for kind, _ in launched) == ["srun"] + ["task"] * NODES
        wait_until(
            lambda: status_file.exists() and len(status_file.read_text().splitlines()) == NODES,
            60,
            "every dial-in process to end",
        )
        statuses = [line.split()[1] for line in status_file.read_text().splitlines()]
        assert statuses == ["0"] * NODES, status_file.read_text()
        wait_until(lambda: not any(pid_alive(int(pid)) for _, pid in launched), 30, "srun to end")
        wait_until(lambda: not pid_alive(hub), 30, "the hub to end")
        assert not pidfile.exists()
        secret = home / ".ppft" / "secret"
        assert secret.exists() and secret.stat().st_mode & 0o777 == 0o600
    finally:
        try:
            os.killpg(batch.pid, signal.SIGKILL)  # anything of the batch job's session still there
        except (ProcessLookupError, PermissionError):
            pass
        if pidfile.exists() and hub and not pid_alive(hub):
            pidfile.unlink()
