"""`Batching`: how many jobs of a function go in one frame, and how many may be in flight per worker.

One rule for every kind of node (local pool, ppserver link, dial-in workers), learned per function (by
digest), because one server runs tiny and long jobs alike: aim at `_TARGET_FRAME_SECONDS` of work per
frame, at most `MAX_BATCH` jobs, two frames in flight per worker, so tiny jobs are pipelined 256 at a time
(`scripts/bench --only tiny`) while long jobs (`_LONG_JOB_SECONDS` and more) go one at a time
(`scripts/bench --only cpu`). A function never seen before goes one job per worker until its first result says
how long it runs: 16 long jobs submitted after 10,000 tiny ones must not land on one worker in one frame.
"""

from __future__ import annotations

__all__ = ["MAX_BATCH", "Batching"]

MAX_BATCH = 256
_TARGET_FRAME_SECONDS = 0.002
_LONG_JOB_SECONDS = 0.005
_MAX_FUNCTIONS = 4096


class Batching:
    """Learns each function's run time from results; gives (batch, window per worker) for it."""

    __slots__ = ("_avg", "_limits", "one_at_a_time", "prefetch_long")

    def __init__(self, *, one_at_a_time: bool = False, prefetch_long: bool = False) -> None:
        self._avg: dict[bytes, float] = {}  # digest -> EWMA of one job's run time, seconds
        self._limits: dict[bytes, tuple[int, int]] = {}  # digest -> (batch, window), derived from _avg
        self.one_at_a_time = one_at_a_time  # restart=True: a fresh worker per job, nothing prefetched
        self.prefetch_long = prefetch_long  # across a network, keep one long job queued per worker

    def limits(self, digest: bytes) -> tuple[int, int]:
        """(jobs per frame, jobs in flight per worker) for the function with `digest`."""
        return self._limits.get(digest, (1, 1))

    def learn(self, digest: bytes, mean: float) -> None:
        """Fold in the mean run time of this function's jobs in one result frame."""
        old = self._avg.get(digest)
        avg = mean if old is None else 0.7 * old + 0.3 * mean
        if old is None and len(self._avg) >= _MAX_FUNCTIONS:
            self._avg.clear()
            self._limits.clear()
        self._avg[digest] = avg
        if self.one_at_a_time:
            limits = (1, 1)
        elif avg >= _LONG_JOB_SECONDS:
            limits = (1, 2 if self.prefetch_long else 1)
        else:
            batch = max(1, min(MAX_BATCH, int(_TARGET_FRAME_SECONDS / max(avg, 1e-7))))
            limits = (batch, 2 * batch)
        self._limits[digest] = limits

    def learn_results(self, pairs: list[tuple[bytes, float]]) -> None:
        """Learn from (digest, run time) of the jobs of one result frame."""
        sums: dict[bytes, list[float]] = {}
        for digest, seconds in pairs:
            entry = sums.get(digest)
            if entry is None:
                sums[digest] = [seconds, 1.0]
            else:
                entry[0] += seconds
                entry[1] += 1.0
        for digest, (total, count) in sums.items():
            self.learn(digest, total / count)
