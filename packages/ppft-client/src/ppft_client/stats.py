"""Per-node job statistics and ppft's classic statistics table."""

from __future__ import annotations

import io
import time
from collections.abc import Mapping
from typing import Any

__all__ = ["Statistics", "format_stats"]


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
