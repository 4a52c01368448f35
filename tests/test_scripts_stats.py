"""`print_stats()` from a script file: the table of ppft 1.7.8, whose last line counts the workers that ran
the jobs, local and remote (a run on a ppserver alone does not read "0 cores")."""

from __future__ import annotations

import re

from scriptlib import run_script


def test_print_stats_counts_the_workers_that_ran_the_jobs(script_mode: dict[str, str]) -> None:
    out = run_script("stats_table.py", env=script_mode).check().stdout
    lines = out.splitlines()
    assert lines[0] == "285"
    assert lines[1:3] == [
        "Job execution statistics:",
        " job count | % of all jobs | job time sum | time per job | job server",
    ]
    node = script_mode.get("PPSERVER", "local")
    assert re.fullmatch(
        rf"\s+10 \|\s+100\.00 \|\s+\d+\.\d{{4}} \|\s+\d+\.\d{{6}} \| {re.escape(node)}", lines[3]
    )
    assert lines[4].startswith("Time elapsed since server creation ")
    if "PPSERVER" in script_mode:  # pp.Server(0, ppservers=(a ppserver with 2 workers,))
        assert lines[5] == "0 active tasks, 2 cores (0 local, 2 on 1 remote node)"
    else:  # pp.Server(2): ppft 1.7.8's line, word for word
        assert lines[5] == "0 active tasks, 2 cores"
    assert lines[6:] == [""]  # and a blank line, as 1.7.8
