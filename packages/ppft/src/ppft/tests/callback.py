"""Callbacks: each job's result is added into a shared sum by `callback=`, then `wait()` joins them.

python -m ppft.tests.callback [ncpus]
"""

import math
import sys
import threading

import ppft as pp
from ppft.tests import check, ncpus_from_argv


class Sum:
    """The callback's target: adds results under a lock (callbacks may run on another thread)."""

    def __init__(self) -> None:
        self.value = 0.0
        self.calls = 0
        self.lock = threading.Lock()

    def add(self, value: float) -> None:
        with self.lock:
            self.value += value
            self.calls += 1


def part_sum(start: int, end: int) -> float:
    """Partial sum of the alternating harmonic series 1 - 1/2 + 1/3 - ..., over [start, end)."""
    total = 0.0
    for x in range(start, end):
        if x % 2 == 0:
            total -= 1.0 / x
        else:
            total += 1.0 / x
    return total


def main() -> None:
    job_server = pp.Server(ncpus_from_argv())
    try:
        start, end, parts = 1, 2_000_000, 32
        step = (end - start) // parts + 1
        result = Sum()
        for index in range(parts):
            lo = start + index * step
            hi = min(start + (index + 1) * step, end)
            job_server.submit(part_sum, (lo, hi), callback=result.add)
        job_server.wait()
        check(result.calls == parts, f"{result.calls} callbacks ran, want {parts}")
        check(abs(result.value - math.log(2)) < 1e-6, f"sum {result.value} is not ln 2 = {math.log(2)}")
        print(f"callback: {parts} callbacks summed to ln 2 within 1e-6 ({job_server.get_ncpus()} workers)")
    finally:
        job_server.destroy()


if __name__ == "__main__":
    main()
    sys.exit(0)
