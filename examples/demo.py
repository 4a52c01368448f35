"""The README's demonstration: the classic ppft example on local workers, then the modern API."""

import math
import time

import ppft as pp


def is_prime(n):
    """Trial division: deliberately pure-Python CPU work."""
    if n < 2:
        return False
    return all(n % d != 0 for d in range(2, int(n**0.5) + 1))


def sum_primes(n):
    """Sum of the primes below n (the classic ppft example)."""
    return sum(x for x in range(2, n) if is_prime(x))


def main():
    with pp.Server() as job_server:
        print(f"ppft {pp.__version__}: {job_server.get_ncpus()} local workers")
        f1 = job_server.submit(math.sin, (math.pi / 2,), (), ("math",))
        f2 = job_server.submit(min, (3.2, 10.0, 7.5), (), ())
        f3 = job_server.submit(sum, ([1, 2, 3],), (), ())
        print("sin(pi/2), min, sum ->", (f1(), f2(), f3()))

        inputs = (100000, 100100, 100200, 100300, 100400, 100500, 100600, 100700)
        start = time.time()
        jobs = [(n, job_server.submit(sum_primes, (n,), (is_prime,))) for n in inputs]
        for n, job in jobs:
            print(f"Sum of primes below {n} is {job()}")
        print(f"8 sum_primes jobs in {time.time() - start:.2f} s")

        start = time.time()
        futures = [job_server.submit(pow, (x, 2)) for x in range(20000)]
        total = sum(f.result(timeout=60) for f in futures)
        print(f"20,000 tiny jobs in {time.time() - start:.2f} s (sum of squares {total})")
        job_server.print_stats()

    with pp.Executor(2) as ex:
        print("Executor.map:", list(ex.map(abs, [-1, -2, -3])))


if __name__ == "__main__":
    main()
