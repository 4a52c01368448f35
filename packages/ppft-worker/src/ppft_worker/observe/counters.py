"""What a ppserver or a client counts for its status page: job outcomes, jobs per second, job durations,
recent failures.

    I/O thread (the only writer, once per result frame) --plain ints, lists, a deque--> HTTP thread (reads)

The writer is the thread that owns the jobs: it adds to plain attributes without any lock, once per frame of
up to hundreds of results (an integer add, a clock read, a `max` and `min` over the frame's run times), never
once per job where a frame already holds the count. Readers (the status page's thread, `status()`) copy
what they need with single C-level operations (`list(...)`, reading an int) and never write. Under the GIL
each read sees a value that was true at some moment, but two reads may see different moments: a snapshot
can be slightly inconsistent (a job counted in `JobTally` and not yet in `Rate`), never torn or
decreasing. Counters only grow, so a Prometheus scrape never sees one go back.

This module must never take a lock, call into the loop, or hold anything a peer sent beyond the bounded,
escaped text of `Failures`.
"""

from __future__ import annotations

import time
from bisect import bisect_left
from collections import deque
from collections.abc import Sequence
from typing import Any

from ppft_protocol import printable

__all__ = [
    "DURATION_BOUNDS",
    "MAX_REASONS",
    "OUTCOMES",
    "Counters",
    "Durations",
    "Failures",
    "JobTally",
    "Rate",
    "outcome_of",
]

OUTCOMES = ("ok", "error", "lost", "timeout", "cancelled")
"""How a job can end: returned; raised; lost with its worker or node (after its retries); stopped at its
time limit; cancelled (by its submitter, or because its client left) before it produced a result."""

DURATION_BOUNDS = (
    0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 60.0, 300.0, 3600.0, float("inf"),
)  # fmt: skip
"""Upper bounds (seconds, inclusive) of the job duration histogram's buckets: tiny jobs to hour-long ones."""

_monotonic = time.monotonic

_LOST_TYPES = frozenset(
    (
        "ppft_worker.errors.WorkerLostError",
        "ppft_client.errors.WorkerLostError",
        "ppft_client.errors.NodeLostError",
    )
)
_CANCELLED_TYPE = "concurrent.futures.CancelledError"  # as a worker answers a cancelled job (stealing)


def outcome_of(error_type: str) -> str:
    """The outcome of a job that failed with an exception of type `error_type` ("module.QualName"): "lost"
    for ppft's lost worker and node errors, "cancelled" for a cancellation, "timeout" for a time limit
    ppft enforced (a ppft error type whose name ends in TimeoutError), else "error" (the job raised)."""
    if error_type in _LOST_TYPES:
        return "lost"
    if error_type == _CANCELLED_TYPE:
        return "cancelled"
    if error_type.startswith("ppft") and error_type.endswith("TimeoutError"):
        return "timeout"
    return "error"


class JobTally:
    """Jobs ended, by outcome (`OUTCOMES`): one attribute per outcome, added to by the owner's thread."""

    __slots__ = OUTCOMES

    def __init__(self) -> None:
        self.ok = 0
        self.error = 0
        self.lost = 0
        self.timeout = 0
        self.cancelled = 0

    def snapshot(self) -> dict[str, int]:
        return {name: getattr(self, name) for name in OUTCOMES}


class Rate:
    """Jobs finished per second over the last `seconds` seconds: a ring of per-second counts.

    `add(n)` (writer) reads the monotonic clock once; `series()` (reader) gives the complete seconds, oldest
    first, zeros included, and never the second still under way."""

    __slots__ = ("_counts", "_second", "seconds")

    def __init__(self, seconds: int = 300) -> None:
        self.seconds = seconds
        self._counts = [0] * seconds
        self._second = int(_monotonic())

    def add(self, n: int) -> None:
        second = int(_monotonic())
        if second != self._second:
            self._roll(second)
        self._counts[second % self.seconds] += n

    def _roll(self, second: int) -> None:
        """Zero the slots of the seconds between the last one counted and `second` (the ring's new head)."""
        counts = self._counts
        size = self.seconds
        for s in range(max(self._second + 1, second - size + 1), second + 1):
            counts[s % size] = 0
        self._second = second

    def series(self, length: int | None = None) -> list[int]:
        """Jobs finished in each of the last `length` complete seconds (default: all kept), oldest first."""
        size = self.seconds
        length = size - 1 if length is None else min(length, size - 1)
        counts = list(self._counts)  # one C-level copy: the writer may add meanwhile, not tear it
        last = self._second
        now = int(_monotonic())
        out = []
        for s in range(now - length, now):
            out.append(counts[s % size] if last - size < s <= last else 0)
        return out


class Durations:
    """A histogram of job run times (the workers' own measure, `Result.wall_time`), per result frame.

    `add(walls, total)`: a frame's run times and their sum. A frame whose jobs all fall in one bucket (the
    usual frame of tiny jobs) costs a `max`, a `min` and one add; only a frame that straddles bucket bounds is
    sorted out job by job."""

    __slots__ = ("bounds", "counts", "sum")

    def __init__(self, bounds: tuple[float, ...] = DURATION_BOUNDS) -> None:
        if not bounds or bounds[-1] != float("inf"):
            raise ValueError("the last bound of a histogram must be +inf")
        self.bounds = bounds
        self.counts = [0] * len(bounds)  # per bucket, not cumulative
        self.sum = 0.0

    def add(self, walls: Sequence[float], total: float) -> None:
        if not walls:
            return
        bounds = self.bounds
        i = bisect_left(bounds, max(walls))
        if i == 0 or min(walls) > bounds[i - 1]:
            self.counts[i] += len(walls)
        else:
            counts = self.counts
            for wall in walls:
                counts[bisect_left(bounds, wall)] += 1
        self.sum += total

    def add_mean(self, count: int, total: float) -> None:
        """`count` jobs known only by their total run time (a direct worker's report): all in the bucket of
        their mean, the sum exact."""
        if count > 0:
            self.counts[bisect_left(self.bounds, total / count)] += count
            self.sum += total

    def snapshot(self) -> dict[str, Any]:
        """`{"bounds": [...], "counts": [...], "sum": s, "count": n}`: counts per bucket (not cumulative), the
        last bound `null` for +inf (JSON has no infinity); `count` is the counts' sum."""
        counts = list(self.counts)
        return {
            "bounds": [None if b == float("inf") else b for b in self.bounds],
            "counts": counts,
            "sum": self.sum,
            "count": sum(counts),
        }


class Failures:
    """The last `keep` failures worth showing (a worker that died, a refused connection): when, what kind,
    and a line of text, made `printable` and bounded when it is recorded (it may hold a peer's words)."""

    __slots__ = ("_items",)

    def __init__(self, keep: int = 50) -> None:
        self._items: deque[tuple[float, str, str]] = deque(maxlen=keep)

    def add(self, kind: str, text: str) -> None:
        self._items.append((time.time(), kind, printable(text, 300)))  # deque.append: atomic for readers

    def snapshot(self) -> list[dict[str, Any]]:
        """Newest first: `{"time": unix seconds, "kind": ..., "text": ...}`."""
        return [{"time": t, "kind": kind, "text": text} for t, kind, text in reversed(list(self._items))]


MAX_REASONS = 32
"""Distinct refusal reasons counted apart; any further one is counted as "other" (a bounded label set)."""


class Counters:
    """Everything one ppserver or client counts for its status: outcomes, rate, durations, failures, and
    connections refused by reason (its short reason, as the log's summaries count them)."""

    __slots__ = ("durations", "failures", "rate", "refused", "started", "tally")

    def __init__(self) -> None:
        self.started = time.time()
        self.tally = JobTally()
        self.rate = Rate()
        self.durations = Durations()
        self.failures = Failures()
        self.refused: dict[str, int] = {}

    def ended(self, ok: int, error: int = 0) -> None:
        """`ok + error` jobs answered by their workers (one frame): counted, and in the jobs/s ring."""
        tally = self.tally
        tally.ok += ok
        if error:
            tally.error += error
        self.rate.add(ok + error)

    def refuse(self, reason: str, line: str) -> None:
        """A connection refused (`reason`: its short reason, a label value) and the log line that said so."""
        refused = self.refused
        key = printable(reason, 80)
        if key not in refused and len(refused) >= MAX_REASONS:
            key = "other"
        refused[key] = refused.get(key, 0) + 1
        self.failures.add("refused", line)
