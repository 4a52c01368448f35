"""A large global read by a job still travels, with one warning that suggests an argument instead."""

import logging
import os

import ppft as pp

logging.basicConfig(format="%(levelname)s %(name)s: %(message)s")
PPSERVER = os.environ.get("PPSERVER")
job_server = pp.Server(0, ppservers=(PPSERVER,)) if PPSERVER else pp.Server(2)

BIG = list(range(400_000))


def total(k):
    return sum(BIG) + k


print([job_server.submit(total, (k,))() for k in range(3)])
job_server.destroy()
