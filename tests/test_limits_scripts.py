"""Limits on jobs from a user's script (tests/scripts/limits_jobs.py): a time limit that kills the job's
worker and raises `JobTimeoutError` within 2 s, the next job running at once, and `terminate()` of a
running job; run as a file, with -c and from stdin, on local workers and on a real ppserver."""

from __future__ import annotations

import pytest

from scriptlib import HOWS, module_mode, run_script  # noqa: F401 - module_mode is a fixture

EXPECTED = {
    "warm": "0",
    "timeout": "True True True True",
    "next": "0 True",
    "template": "JobTimeoutError",
    "terminate": "True True",
    "cancelled": "True True True",
    "after": "0 True",
    "stats": "True",
}


@pytest.mark.parametrize("how", HOWS)
def test_time_limits_and_terminate_from_a_script(module_mode, how):  # noqa: F811
    if module_mode:
        pytest.skip("limits on ppservers: next step")
    ran = run_script("limits_jobs.py", how=how, env=module_mode).check()
    printed = dict(line.split(": ", 1) for line in ran.stdout.splitlines() if ": " in line)
    assert {key: printed.get(key) for key in EXPECTED} == EXPECTED, ran.stdout + ran.stderr
    assert "ran longer than its timeout of 1 s on" in printed["timeout message"]
