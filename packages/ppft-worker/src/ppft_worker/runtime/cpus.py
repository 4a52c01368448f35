"""How many CPUs this process may really use: the default worker count of clients, ppserver and dial-ins."""

from __future__ import annotations

import os

__all__ = ["detect_ncpus"]


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
