"""A value changed between two submits reaches the next job: in place, rebound, with and without globals=."""

import os

import ppft as pp

PPSERVER = os.environ.get("PPSERVER")
job_server = pp.Server(0, ppservers=(PPSERVER,)) if PPSERVER else pp.Server(2)

LIMITS = [1]
CONFIG = {"mode": "first"}
SEEN = set()


def limit():
    return LIMITS[0]


def describe(n):
    return f"{CONFIG['mode']}:{n}:{sorted(SEEN)}"


print(job_server.submit(limit, (), globals=globals())())
LIMITS[0] = 2  # mutated in place
print(job_server.submit(limit, (), globals=globals())())
LIMITS = [3]  # rebound
print(job_server.submit(limit, ())())
LIMITS.append(4)
print(job_server.submit(limit, ())(), LIMITS)

jobs = []
for i in range(3):  # each submit sees the data as it was at that submit
    CONFIG["mode"] = f"round{i}"
    SEEN.add(i)
    jobs.append(job_server.submit(describe, (i,)))
print([job() for job in jobs])

template = pp.Template(job_server, describe)
CONFIG["mode"] = "template"
print(template.submit(7)())

job_server.destroy()

with pp.Executor(2, ppservers=(PPSERVER,) if PPSERVER else ()) as ex:
    CONFIG["mode"] = "map"
    print(list(ex.map(describe, [1, 2])))
    CONFIG["mode"] = "submit"
    print(ex.submit(describe, 3).result())
