"""Jobs that end every way a job can end here, then what the job server's status says about them."""

import json
import os

import ppft as pp

PPSERVER = os.environ.get("PPSERVER")  # "host:port": every job on that ppserver; unset: local workers
job_server = pp.Server(0, ppservers=(PPSERVER,)) if PPSERVER else pp.Server(2)


def square(x):
    return x * x


def fails(x):
    raise ValueError(f"bad {x}")


def kills_its_worker():
    os._exit(3)


jobs = [job_server.submit(square, (i,)) for i in range(200)]
bad = [job_server.submit(fails, (i,)) for i in range(7)]
lost = job_server.submit(kills_its_worker, modules=("os",))
print(sum(job() for job in jobs))
errors = 0
for job in bad:
    try:
        job()
    except ValueError:
        errors += 1
print(errors)
try:
    lost()
except Exception as exc:
    print(type(exc).__name__)
status = job_server.status()
print(json.dumps({key: status["jobs"][key] for key in ("ok", "error", "lost", "timeout", "cancelled")}))
print(status["durations"]["count"], len(status["workers"]), status["worker_restarts"])
print(json.dumps([(node["name"], node["state"], node["jobs_done"]) for node in status["nodes"]]))
job_server.destroy()
