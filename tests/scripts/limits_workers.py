"""A user's program whose workers have limits: a memory limit of 200 MiB and a new worker every 20 jobs
(one line per case). PPSERVER="host:port": every job runs there, a ppserver started with those limits
(--worker-memory-limit 200MiB --max-jobs-per-worker 20); unset: local workers with the same limits."""

import os
import time

import ppft as pp

PPSERVER = os.environ.get("PPSERVER")
if PPSERVER:
    job_server = pp.Server(0, ppservers=(PPSERVER,))
else:
    job_server = pp.Server(2, worker_memory_limit="200MiB", max_jobs_per_worker=20)


def hog(megabytes, seconds):
    data = bytearray(megabytes << 20)
    for i in range(0, len(data), 4096):
        data[i] = 1  # touched: resident
    time.sleep(seconds)
    return len(data) >> 20


def worker_pid(n):
    return os.getpid(), n


print("small:", job_server.submit(hog, (10, 0), (), ("time",))())
start = time.monotonic()
try:
    job_server.submit(hog, (400, 30), (), ("time",))()
    print("memory: no error")
except pp.WorkerLostError as exc:
    print("memory:", time.monotonic() - start < 5, "passed the worker memory limit of 200 MiB" in str(exc))
    print("memory message:", exc)
start = time.monotonic()
print("healed:", job_server.submit(hog, (10, 0), (), ("time",))(), time.monotonic() - start < 5)

jobs = [job_server.submit(worker_pid, (n,), (), ("os",)) for n in range(200)]
results = [job() for job in jobs]
print("recycled:", [n for _, n in results] == list(range(200)), len({pid for pid, _ in results}) >= 10)
job_server.destroy()
