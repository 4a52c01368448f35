"""The script harness itself: one plain script, run as a file, with -c and from stdin, local and remote."""

from __future__ import annotations

import pytest

from scriptlib import HOWS, run_script


@pytest.mark.parametrize("how", HOWS)
def test_a_plain_script_runs_the_same_every_way_it_is_started(script_mode: dict[str, str], how: str) -> None:
    ran = run_script("basic_jobs.py", how=how, env=script_mode).check()
    assert ran.stdout.splitlines() == ["1.0", "[4, 25, 168]"]
