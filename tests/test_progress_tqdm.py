"""tqdm progress bars over ppft jobs from a user's script, on local workers and on a real ppserver: over
`as_completed` (moving while jobs still run), with done-callbacks, and over `Executor.map`."""

from __future__ import annotations

from scriptlib import run_script


def test_tqdm_progress_bars_over_jobs(script_mode: dict[str, str]) -> None:
    ran = run_script("progress_tqdm.py", env=script_mode).check()
    assert ran.stdout.splitlines() == ["True", str(sum(i * i for i in range(300))), "True",
                                       str(sum(i * i for i in range(100)))]  # fmt: skip
    last: dict[str, str] = {}  # each bar's last state, as the terminal would show it
    for state in ran.stderr.replace("\r", "\n").split("\n"):
        if ":" in state:
            last[state.split(":")[0]] = state
    assert list(last) == ["one by one", "as_completed", "callbacks", "map"], ran.stderr
    for (name, state), total in zip(last.items(), (20, 300, 200, 100), strict=True):
        assert "100%" in state and f"| {total}/{total} [" in state, (name, state)
