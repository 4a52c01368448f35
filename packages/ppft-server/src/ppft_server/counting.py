"""What a ppserver counts per result frame for its status page and metrics (`status.server_status` shows it).

Counting costs the I/O thread a few operations per result frame: the frame's failure count comes from the
decoder (`RawResults.failures`), so a frame of successes is counted with one add; only a frame that holds a
failure is looked at result by result, to tell an error from a job cancelled because its client left.
Runs on the I/O thread only; it never blocks and never raises for a result.

A direct worker's jobs never pass here: the worker reports cumulative counts on a pipe
(`ppft_worker.process.report`), and `count_direct` adds what changed since its last report; their run times
go into the duration histogram by their mean over the report's interval (the worker keeps no histogram).
"""

from __future__ import annotations

import math
from typing import cast

from ppft_protocol import Result
from ppft_protocol.relay import RawResults
from ppft_worker.observe import Counters, outcome_of
from ppft_worker.process import REPORT_RECORD
from ppft_worker.runtime import ServedTask, Task

__all__ = ["DirectCounts", "count_direct", "count_raw", "count_results"]

DirectCounts = tuple[int, int, float]
"""A direct worker's cumulative counts, as it reports them: jobs done, of which failed, their run time (s)."""

_OK_BIT = 0x01  # a result's status byte: the job returned


def count_raw(counters: Counters, batch: RawResults, tasks: list[Task | None]) -> None:
    """Count a local worker's result frame passed on undecoded (`tasks[i]` None: no longer in flight)."""
    dropped = tasks.count(None)
    walls = batch.wall_times
    if dropped:
        walls = tuple([wall for task, wall in zip(tasks, walls, strict=True) if task is not None])
    if not batch.failures:
        counters.ended(len(tasks) - dropped)
    else:
        ok = error = cancelled = 0
        body = batch.body
        for task, start in zip(tasks, batch.starts, strict=True):
            if task is None:
                continue
            if body[start + 8] & _OK_BIT:
                ok += 1
            elif cast("ServedTask", task).owner.closed:
                cancelled += 1  # stopped (Cancel) because its client left
            else:
                error += 1
        counters.ended(ok, error)
        if cancelled:
            counters.tally.cancelled += cancelled
            counters.rate.add(cancelled)
    counters.durations.add(walls, sum(walls))


def count_results(counters: Counters, pairs: list[tuple[Task, Result]]) -> None:
    """Count decoded results: a dial-in worker's frame, or jobs the pool failed (lost with their worker)."""
    walls = [result[4] for _, result in pairs]
    failed = [result for _, result in pairs if not result[1]]
    if not failed:
        counters.ended(len(pairs))
    else:
        tally = counters.tally
        tally.ok += len(pairs) - len(failed)
        for result in failed:
            outcome = outcome_of(result.error_type)
            setattr(tally, outcome, getattr(tally, outcome) + 1)
        counters.rate.add(len(pairs))
    counters.durations.add(walls, sum(walls))


def count_direct(counters: Counters, before: DirectCounts, data: bytes) -> DirectCounts | str:
    """Count what a direct worker's reports `data` (whole `REPORT_RECORD`s, the newest last) add to `before`,
    its counts as last reported; returns its counts now, or why `data` is not a report (nothing counted):
    a broken record, counts that go back (or are not numbers), or more new failures than new jobs."""
    size = REPORT_RECORD.size
    if not data or len(data) % size:
        return f"{len(data)} bytes, not a whole number of {size}-byte records"
    counts = before
    for offset in range(0, len(data), size):
        done, errors, busy = REPORT_RECORD.unpack_from(data, offset)
        more, failed = done - counts[0], errors - counts[1]
        if not (0 <= failed <= more and counts[2] <= busy < math.inf):
            return f"counts ({done}, {errors}, {busy!r}) after ({counts[0]}, {counts[1]}, {counts[2]!r})"
        counts = (done, errors, busy)
    jobs = counts[0] - before[0]
    failed = counts[1] - before[1]
    if jobs:
        counters.ended(jobs - failed, failed)
        counters.durations.add_mean(jobs, counts[2] - before[2])
    return counts
