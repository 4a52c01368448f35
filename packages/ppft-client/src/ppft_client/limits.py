"""Checking the limits a caller puts on jobs (`submit(timeout=)`, `Server(job_timeout=)`, ...): a value that
is not one gets a `ValueError` (or `TypeError`) from the call, naming the argument and saying what it takes.

It checks values, and `stop_job` asks the node holding a job to stop it: the limits are enforced where jobs
run (`ppft_worker.pool.limits`, ppserver).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any

__all__ = ["check_count", "check_timeout", "stop_job"]

Failed = Callable[[Any, Exception, str], None]  # the scheduler's `_node_failed(node, exc, doing)`


def stop_job(pool: Any, nodes: Iterable[Any], job: Any, on_error: Failed) -> None:
    """Stop `job` on the node that holds it (the scheduler's I/O thread): the local `pool`, else the first
    of `nodes` that has it; a node that raises is handed to `on_error` (it closes that node only)."""
    if pool.terminate(job):
        return
    for node in nodes:
        try:
            if node.terminate(job):
                return
        except Exception as exc:  # noqa: BLE001 - one node's bug closes that node only
            on_error(node, exc, f"terminating job {job.tid} on {node.name}")


def check_timeout(value: object, name: str) -> float | None:
    """`value` as a number of seconds (None: no limit); a `TypeError` or `ValueError` naming `name` if it is
    not a positive, finite number."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(
            f"{name} must be a number of seconds (int or float) or None for no limit, "
            f"not {type(value).__name__} {value!r}"
        )
    seconds = float(value)
    if not (seconds > 0 and math.isfinite(seconds)):
        raise ValueError(
            f"{name} must be a positive number of seconds (the time a job may run on a worker), or None "
            f"for no limit, not {value!r}"
        )
    return seconds


def check_count(value: object, name: str) -> None:
    """A `TypeError` or `ValueError` naming `name` unless `value` is None or a whole number >= 1."""
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be a whole number >= 1 or None, not {type(value).__name__} {value!r}")
    if value < 1:
        raise ValueError(
            f"{name} must be >= 1 (a worker is replaced after that many jobs) or None, not {value}"
        )
