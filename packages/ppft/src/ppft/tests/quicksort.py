"""Parallel quicksort: the top levels of the recursion split the list here, the leaves are sorted by jobs.

python -m ppft.tests.quicksort [ncpus]
"""

from __future__ import annotations

import random
import sys
from typing import Any

import ppft as pp
from ppft.tests import check, ncpus_from_argv


def quicksort(a: list[int], n: int = -1, srv: pp.Server | None = None) -> list[Any]:
    """Sort `a`; the first `n` levels of recursion run here, below them each part is submitted to `srv`."""
    if len(a) <= 1:
        return a
    if n:
        smaller = quicksort([x for x in a if x < a[0]], n - 1, srv)
        larger = quicksort([x for x in a[1:] if x >= a[0]], n - 1, srv)
        return [*smaller, a[0], *larger]
    if srv is None:
        raise ValueError("quicksort needs a server to submit the parts below the first n levels")
    return [srv.submit(quicksort, (a,))]


def main() -> None:
    job_server = pp.Server(ncpus_from_argv())
    try:
        rng = random.Random(1729)
        data = [rng.randint(0, 100_000) for _ in range(100_000)]
        parts = quicksort(data, 4, job_server)
        jobs = sum(1 for x in parts if isinstance(x, pp.Job))
        output = []
        for x in parts:
            if isinstance(x, pp.Job):
                output.extend(x())
            else:
                output.append(x)
        check(output == sorted(data), "the parallel quicksort's output is not the sorted input")
        print(f"quicksort: {len(data)} numbers sorted by {jobs} jobs ({job_server.get_ncpus()} workers)")
    finally:
        job_server.destroy()


if __name__ == "__main__":
    main()
    sys.exit(0)
