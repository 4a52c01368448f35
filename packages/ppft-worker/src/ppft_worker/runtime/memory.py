"""Memory of worker processes: a limit as users write it ("2GiB", "512 MB", 2_000_000_000), and the
resident memory of a process as the kernel reports it. Also the command-line forms of a worker's limits
that `ppft-worker --connect` and `ppft-worker --stdio` share (`memory_option`, `count_option`: argparse
types for `--worker-memory-limit SIZE` and `--max-jobs-per-worker N`).

`resident_bytes(pid)` reads `/proc/PID/statm` (Linux; also where a `/proc` of that form exists). Elsewhere
it returns None, and a pool with a memory limit logs once that it cannot enforce it. Reading it costs a few
microseconds per worker; the pool does it on a timer (`pool.limits.MemoryWatch`), never per job.
"""

from __future__ import annotations

import argparse
import math
import os
import re

__all__ = ["count_option", "format_bytes", "memory_option", "parse_memory_limit", "resident_bytes"]

_UNITS = {
    "": 1, "b": 1,
    "k": 1000, "kb": 1000, "m": 1000**2, "mb": 1000**2, "g": 1000**3, "gb": 1000**3,
    "t": 1000**4, "tb": 1000**4,
    "kib": 1 << 10, "mib": 1 << 20, "gib": 1 << 30, "tib": 1 << 40,
}  # fmt: skip
_FORM = re.compile(r"\s*([0-9]+(?:\.[0-9]*)?|\.[0-9]+)\s*([a-zA-Z]*)\s*")
_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def parse_memory_limit(value: object, name: str) -> int | None:
    """`value` as a number of bytes (None: no limit): an int of bytes, or a string with a unit ("2GiB",
    "1.5 GB", "512MiB", "800M"; K/M/G/T are powers of 1000, KiB/MiB/GiB/TiB of 1024). A `ValueError` naming
    `name` for anything else, or a limit under 1 MiB."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise TypeError(
            f"{name} must be a size such as '2GiB' or a number of bytes, not {type(value).__name__}"
        )
    if isinstance(value, str):
        match = _FORM.fullmatch(value)
        unit = _UNITS.get(match.group(2).lower()) if match else None
        if match is None or unit is None:
            raise ValueError(
                f"{name} must be a size such as '2GiB', '1.5GB' or '512MiB' (units B, KB, MB, GB, TB and "
                f"KiB, MiB, GiB, TiB), not {value!r}"
            )
        size = float(match.group(1)) * unit
    else:
        size = float(value)
    if not math.isfinite(size) or size < 1 << 20:
        raise ValueError(
            f"{name} must be at least 1 MiB (a worker needs more than that to run), not {value!r}"
        )
    return int(size)


def memory_option(text: str) -> int:
    """`--worker-memory-limit SIZE` (an argparse type): the limit in bytes, or `ArgumentTypeError` saying
    what is accepted."""
    try:
        limit = parse_memory_limit(text, "--worker-memory-limit")
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    assert limit is not None
    return limit


def count_option(text: str) -> int:
    """`--max-jobs-per-worker N` (an argparse type): N, or `ArgumentTypeError` unless a whole number >= 1."""
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"--max-jobs-per-worker wants a whole number >= 1, not {text!r}")
    return int(text)


def resident_bytes(pid: int) -> int | None:
    """The resident memory of process `pid` in bytes; None if this system does not say (no /proc) or the
    process is gone."""
    try:
        with open(f"/proc/{pid}/statm", "rb") as f:
            return int(f.read().split()[1]) * _PAGE
    except (OSError, ValueError, IndexError):
        return None


def format_bytes(size: float) -> str:
    """`size` in bytes as people read it: "2 GiB", "1.5 GiB", "512 MiB"."""
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if size >= scale:
            return f"{size / scale:.3g} {unit}"
    return f"{int(size)} B"
