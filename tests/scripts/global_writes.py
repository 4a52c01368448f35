"""A job that changes module data changes its own copy: the caller's data and the next job's stay as sent."""

import os

import ppft as pp

PPSERVER = os.environ.get("PPSERVER")
job_server = pp.Server(0, ppservers=(PPSERVER,)) if PPSERVER else pp.Server(1)

COUNTER = 0
HISTORY = []


def bump(n):
    global COUNTER
    COUNTER += n
    HISTORY.append(n)
    return COUNTER, list(HISTORY)


print([job_server.submit(bump, (n,))() for n in (1, 2, 3)])
print(COUNTER, HISTORY)
COUNTER = 10
print(job_server.submit(bump, (1,))())
job_server.destroy()
