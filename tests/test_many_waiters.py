"""Threads waiting for jobs are woken once the I/O thread's round is over (`Loop.wakes`): every one of many,
in a threaded script run as users run it, on local workers and through a ppserver."""

from __future__ import annotations

from scriptlib import run_script


def test_every_thread_waiting_for_a_job_is_woken(script_mode: dict[str, str]) -> None:
    ran = run_script("many_waiters.py", env=script_mode, timeout=120.0).check()
    # 12 threads x 25 jobs of 2*(100n+i); 8 threads on one slow job of 2; 4 threads polling it
    assert ran.stdout.splitlines() == ["one at a time 337200", "same job 16", "polled 8"]
