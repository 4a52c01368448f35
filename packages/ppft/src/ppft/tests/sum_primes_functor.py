"""Sum of primes with a `Template` and with a callable class instance (a functor) as the job.

python -m ppft.tests.sum_primes_functor [ncpus]
"""

import math
import sys

import ppft as pp
from ppft.tests import check, ncpus_from_argv


def isprime(n: int) -> bool:
    """True if n is prime."""
    if n < 2:
        return False
    return all(n % i for i in range(2, math.isqrt(n) + 1))


class PrimeSummer:
    """A functor: sums the primes in [start, n); the instance (and its class) travel with each job."""

    def __init__(self, start: int) -> None:
        self.start = start

    def __call__(self, n: int) -> int:
        total = 0
        for x in range(max(self.start, 2), n):
            if all(x % i for i in range(2, math.isqrt(x) + 1)):
                total += x
        return total


def sum_primes(n: int) -> int:
    """Sum of all primes below n."""
    return sum(x for x in range(2, n) if isprime(x))


def main() -> None:
    job_server = pp.Server(ncpus_from_argv())
    try:
        template = pp.Template(job_server, sum_primes, (isprime,), ("math",))
        check(template.submit(100)() == 1060, "sum of primes below 100 must be 1060")
        inputs = (5000, 5100, 5200, 5300)
        by_template = [(n, template.submit(n)) for n in inputs]
        functor = PrimeSummer(2)
        by_functor = [(n, job_server.submit(functor, (n,), modules=("math",))) for n in inputs]
        for (n, a), (_, b) in zip(by_template, by_functor, strict=True):
            want = sum_primes(n)
            check(a() == want, f"Template: sum of primes below {n} is {want}, got {a()}")
            check(b() == want, f"functor: sum of primes below {n} is {want}, got {b()}")
        print(
            f"sum_primes_functor: Template and functor agree on {len(inputs)} sums "
            f"({job_server.get_ncpus()} workers)"
        )
    finally:
        job_server.destroy()


if __name__ == "__main__":
    main()
    sys.exit(0)
