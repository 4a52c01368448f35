"""Dynamic ncpus: the same jobs with the worker count changed between rounds by `set_ncpus`.

python -m ppft.tests.dynamic_ncpus
"""

import math
import sys

import ppft as pp
from ppft.tests import check


def part_sum(start: int, end: int) -> float:
    """Partial sum of the alternating harmonic series over [start, end)."""
    total = 0.0
    for x in range(start, end):
        if x % 2 == 0:
            total -= 1.0 / x
        else:
            total += 1.0 / x
    return total


def main() -> None:
    job_server = pp.Server(1)
    try:
        start, end, parts = 1, 400_000, 16
        step = (end - start) // parts + 1
        rounds = (1, 2, 4, 1)
        for ncpus in rounds:
            job_server.set_ncpus(ncpus)
            check(job_server.get_ncpus() == ncpus, f"get_ncpus() is {job_server.get_ncpus()}, want {ncpus}")
            jobs = [
                job_server.submit(part_sum, (start + i * step, min(start + (i + 1) * step, end)))
                for i in range(parts)
            ]
            total = sum(job() for job in jobs)
            check(abs(total - math.log(2)) < 1e-5, f"{ncpus} workers: sum {total} is not ln 2")
        print(f"dynamic_ncpus: the same sum with {', '.join(map(str, rounds))} workers")
    finally:
        job_server.destroy()


if __name__ == "__main__":
    main()
    sys.exit(0)
