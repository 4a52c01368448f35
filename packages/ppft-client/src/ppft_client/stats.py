"""Per-node job statistics and ppft's classic statistics table."""

from __future__ import annotations

import io
import os
import time
from collections.abc import Mapping
from typing import Any

__all__ = ["Statistics", "detect_ncpus", "format_stats"]


class Statistics:
    """Statistics of one node, as ppft 1.7's `_Statistics`: `ncpus`, `njobs`, `time` (job time sum)."""

    def __init__(self, ncpus: int, rworker: Any = None) -> None:
        self.ncpus = ncpus
        self.time = 0.0
        self.njobs = 0
        self.rworker = rworker

    def __repr__(self) -> str:
        return f"Statistics(ncpus={self.ncpus}, njobs={self.njobs}, time={self.time:.6f})"


def format_stats(stats: Mapping[str, Statistics], created: float, active: int, ncpus: int) -> str:
    """ppft's table: job count | % of all jobs | job time sum | time per job | job server."""
    out = io.StringIO()
    out.write("Job execution statistics:\n")
    total = sum(stat.njobs for stat in stats.values())
    out.write(" job count | % of all jobs | job time sum | time per job | job server\n")
    for node, stat in stats.items():
        if stat.njobs:
            out.write(
                f"    {stat.njobs:6d} |        {100.0 * stat.njobs / total:6.2f} |     {stat.time:8.4f} |  "
                f"{stat.time / stat.njobs:11.6f} | {node}\n"
            )
    out.write(f"Time elapsed since server creation {time.time() - created}\n")
    out.write(f"{active} active tasks, {ncpus} cores\n\n")
    return out.getvalue()


def _cgroup_cpus() -> float | None:
    """CPUs allowed by a cgroup quota (v2 cpu.max, or v1 cfs quota/period), None when unlimited."""
    try:
        with open("/sys/fs/cgroup/cpu.max") as f:
            quota, period = f.read().split()[:2]
        if quota != "max":
            return int(quota) / int(period)
        return None
    except (OSError, ValueError):
        pass
    try:
        with open("/sys/fs/cgroup/cpu/cpu.cfs_quota_us") as f:
            quota_us = int(f.read())
        with open("/sys/fs/cgroup/cpu/cpu.cfs_period_us") as f:
            period_us = int(f.read())
        return quota_us / period_us if quota_us > 0 and period_us > 0 else None
    except (OSError, ValueError):
        return None


def detect_ncpus() -> int:
    """CPUs this process may really use: its affinity mask, capped by a cgroup CPU quota."""
    try:
        ncpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        ncpus = os.cpu_count() or 1
    quota = _cgroup_cpus()
    if quota is not None:
        ncpus = min(ncpus, max(1, int(quota + 0.999)))
    return max(1, ncpus)
