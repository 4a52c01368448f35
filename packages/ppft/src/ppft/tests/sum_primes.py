"""Sum of primes: one function, a helper it depends on (`depfuncs`) and a module it needs (`modules`).

python -m ppft.tests.sum_primes [ncpus]
"""

import math
import sys

import ppft as pp
from ppft.tests import check, ncpus_from_argv


def isprime(n: int) -> bool:
    """True if n is prime."""
    if not isinstance(n, int):
        raise TypeError("argument passed to isprime is not of 'int' type")
    if n < 2:
        return False
    if n == 2:
        return True
    top = math.isqrt(n)
    i = 2
    while i <= top:
        if n % i == 0:
            return False
        i += 1
    return True


def sum_primes(n: int) -> int:
    """Sum of all primes below n."""
    return sum(x for x in range(2, n) if isprime(x))


def sieve_sum(n: int) -> int:
    """The same sum by the sieve of Eratosthenes, computed here to check the workers."""
    flags = bytearray([1]) * n
    flags[:2] = b"\0\0"
    for i in range(2, int(n**0.5) + 1):
        if flags[i]:
            flags[i * i :: i] = bytearray(len(range(i * i, n, i)))
    return sum(i for i in range(n) if flags[i])


def main() -> None:
    job_server = pp.Server(ncpus_from_argv())
    try:
        inputs = (10000, 10100, 10200, 10300, 10400, 10500, 10600, 10700)
        jobs = [(n, job_server.submit(sum_primes, (n,), (isprime,), ("math",))) for n in inputs]
        for n, job in jobs:
            check(job() == sieve_sum(n), f"sum of primes below {n}: got {job()}, want {sieve_sum(n)}")
        print(
            f"sum_primes: {len(inputs)} sums of primes below 10000..10700 are right "
            f"({job_server.get_ncpus()} workers)"
        )
    finally:
        job_server.destroy()


if __name__ == "__main__":
    main()
    sys.exit(0)
