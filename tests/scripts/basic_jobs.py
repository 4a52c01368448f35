"""The quickstart's first steps, saved in a file: a library function, then one of the file's own."""

import math
import os

import ppft as pp

PPSERVER = os.environ.get("PPSERVER")  # "host:port": every job on that ppserver; unset: local workers
job_server = pp.Server(0, ppservers=(PPSERVER,)) if PPSERVER else pp.Server(2)


def is_prime(n):
    return n > 1 and all(n % d for d in range(2, int(n**0.5) + 1))


def count_primes(n):
    return sum(1 for x in range(n) if is_prime(x))


print(job_server.submit(math.sin, (math.pi / 2,), (), ("math",))())
print([job_server.submit(count_primes, (n,), (is_prime,))() for n in (10, 100, 1000)])
job_server.destroy()
