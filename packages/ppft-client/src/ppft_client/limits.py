"""Checking the limits a caller puts on jobs (`submit(timeout=)`, `Server(job_timeout=)`, ...): a value that
is not one gets a `ValueError` (or `TypeError`) from the call, naming the argument and saying what it takes.

It only checks values: the limits are enforced where jobs run (`ppft_worker.pool.limits`, ppserver).
"""

from __future__ import annotations

import math

__all__ = ["check_count", "check_timeout"]


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
