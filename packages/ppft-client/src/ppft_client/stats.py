"""Per-node job statistics and ppft's classic statistics table.

The table is ppft 1.7.8's, line for line. Its last line, "N active tasks, M cores", counted in 1.7.8 the
local worker processes only (`get_ncpus()`), so a run on ppservers alone read "0 cores" as if nothing had
run; here M counts every worker that runs jobs, the local ones and those of the nodes connected now, and the
split follows when there are nodes: "0 active tasks, 4 cores (0 local, 4 on 1 remote node)". Without
remote nodes the line is 1.7.8's exactly. Nothing here runs on the job path.
"""

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


def format_stats(
    stats: Mapping[str, Statistics],
    created: float,
    active: int,
    ncpus: int,
    remote: Mapping[str, int] | None = None,
) -> str:
    """ppft's table: job count | % of all jobs | job time sum | time per job | job server.

    `active`: jobs not finished; `ncpus`: local workers; `remote`: {node: workers} of the remote nodes
    connected now."""
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
    out.write(f"{active} active tasks, {_cores(ncpus, remote or {})}\n\n")
    return out.getvalue()


def _cores(local: int, remote: Mapping[str, int]) -> str:
    """ "2 cores" (1.7.8's words) without remote nodes, else "6 cores (2 local, 4 on 1 remote node)"."""
    if not remote:
        return f"{local} cores"
    workers = sum(remote.values())
    nodes = f"{len(remote)} remote node{'s' if len(remote) != 1 else ''}"
    return f"{local + workers} cores ({local} local, {workers} on {nodes})"
