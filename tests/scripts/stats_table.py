"""A few jobs, then ppft's statistics table: its last line counts the workers that ran them."""

import os

import ppft as pp

PPSERVER = os.environ.get("PPSERVER")  # "host:port": every job on that ppserver; unset: local workers
job_server = pp.Server(0, ppservers=(PPSERVER,)) if PPSERVER else pp.Server(2)


def square(x):
    return x * x


print(sum(job_server.submit(square, (x,))() for x in range(10)))
job_server.print_stats()
job_server.destroy()
