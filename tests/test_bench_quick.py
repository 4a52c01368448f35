"""Smoke test of scripts/bench: `scripts/bench --quick` runs each scenario at tiny sizes and checks values.

It asserts results, never timings (issue 8). When our ppft cannot run a scenario yet, the harness says why and
this test warns with that reason instead of skipping silently; ProcessPoolExecutor and the bare pipeline
(pipes and TCP) must always pass.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import warnings
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
BENCH = REPO / "scripts" / "bench"
TIMEOUT = 90.0


def _run_quick_bench(json_file: Path) -> subprocess.CompletedProcess[str]:
    proc = subprocess.Popen(
        [sys.executable, str(BENCH), "--quick", "--json", str(json_file)],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        stdout, stderr = proc.communicate(timeout=TIMEOUT)
    finally:
        if proc.poll() is None:
            # SIGTERM first: the harness turns it into SystemExit and kills the process groups it started.
            os.kill(proc.pid, signal.SIGTERM)
            try:
                proc.communicate(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.communicate(timeout=10)
    return subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)


def test_quick_bench_checks_the_values_of_every_implementation_it_can_run(tmp_path: Path) -> None:
    json_file = tmp_path / "quick.json"
    done = _run_quick_bench(json_file)
    assert done.returncode == 0, f"scripts/bench --quick failed:\n{done.stdout}\n{done.stderr}"

    report = json.loads(json_file.read_text())
    assert report["mode"] == "quick"
    figures = report["figures"]
    ok = {(fig["scenario"], fig["impl"]) for fig in figures if fig["status"] == "ok"}
    for scenario in ("startup", "tiny", "latency", "cpu", "payload"):
        assert (scenario, "ppe") in ok, f"ProcessPoolExecutor gave no checked figure for {scenario}"
    assert {("tiny", "bare"), ("tiny", "bare-tcp")} <= ok, "the bare pipeline gave no checked figure"
    assert not [fig for fig in figures if fig["status"] in ("error", "timeout")], done.stdout

    not_run = [
        f"{fig['scenario']}/{fig['impl']}: {fig['note']}" for fig in figures if fig["status"] == "skipped"
    ]
    ppft2 = report["implementations"]["ppft2"]
    if not ppft2["available"]:
        not_run.insert(0, f"ppft2: {ppft2['reason']}")
    if not_run:
        warnings.warn(
            "scripts/bench --quick could not cover: " + "; ".join(dict.fromkeys(not_run)), stacklevel=1
        )
