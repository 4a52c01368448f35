"""Automatic differentiation: instances of user classes travel as arguments and come back as results.

A bound method of a `PartialSum` instance is the job (the instance travels with it); its argument is an
`AD` number carrying a value and a derivative. The truncated series of ln(x) and its derivative 1/x come
back from the workers.

    python -m ppft.tests.auto_diff [ncpus]
"""

from __future__ import annotations

import math
import sys

import ppft as pp
from ppft.tests import check, ncpus_from_argv


class AD:
    """A dual number: value x and derivative dx, with the arithmetic the series needs."""

    def __init__(self, x: float, dx: float = 0.0) -> None:
        self.x = float(x)
        self.dx = float(dx)

    def __pow__(self, val: int) -> AD:
        if not isinstance(val, int):
            raise TypeError("the exponent must be an integer")
        return AD(self.x**val, val * self.x ** (val - 1) * self.dx)

    def __add__(self, val: AD | float) -> AD:
        if isinstance(val, AD):
            return AD(self.x + val.x, self.dx + val.dx)
        return AD(self.x + val, self.dx)

    __radd__ = __add__

    def __mul__(self, val: AD | float) -> AD:
        if isinstance(val, AD):
            return AD(self.x * val.x, self.x * val.dx + val.x * self.dx)
        return AD(self.x * val, val * self.dx)

    __rmul__ = __mul__

    def __truediv__(self, val: AD | float) -> AD:
        if isinstance(val, AD):
            return self * AD(1 / val.x, -val.dx / val.x**2)
        return self * (1 / float(val))

    def __sub__(self, val: AD | float) -> AD:
        if isinstance(val, AD):
            return AD(self.x - val.x, self.dx - val.dx)
        return AD(self.x - val, self.dx)


class PartialSum:
    """ln(x) as the truncated series sum((-1)**(i+1) (x-1)**i / i), i < n."""

    def __init__(self, n: int) -> None:
        self.n = n

    def t_log(self, x: AD) -> AD:
        return self.partial_sum(x - 1)

    def partial_sum(self, x: AD) -> AD:
        total = AD(0.0)
        for i in range(1, self.n):
            total = total + (1.0 if i % 2 else -1.0) * x**i / i
        return total


def main() -> None:
    job_server = pp.Server(ncpus_from_argv())
    try:
        proc = PartialSum(2000)
        points = [1 + i / 32 for i in range(16)]
        jobs = [(x, job_server.submit(proc.t_log, (AD(x, 1.0),))) for x in points]
        for x, job in jobs:
            val = job()
            check(abs(val.x - math.log(x)) < 1e-9, f"t_log({x}) = {val.x}, want ln {x} = {math.log(x)}")
            check(abs(val.dx - 1 / x) < 1e-9, f"t_log'({x}) = {val.dx}, want 1/{x} = {1 / x}")
        print(
            f"auto_diff: ln(x) and its derivative 1/x at {len(points)} points "
            f"({job_server.get_ncpus()} workers)"
        )
    finally:
        job_server.destroy()


if __name__ == "__main__":
    main()
    sys.exit(0)
