"""A user's program whose jobs go to a ppserver (PPSERVER="host:port"), which lets them go straight to its
workers (direct worker links): plain jobs, a job with a time limit (through the ppserver), one with a `put()`
ref (the ppserver passes the ref on to its direct workers), a job stopped while it runs, and the statistics.
One line per case."""

import concurrent.futures
import os
import tempfile
import time

import ppft as pp

job_server = pp.Server(0, ppservers=(os.environ["PPSERVER"],))


def where(x):
    return x + 1, os.getpid()


def total(numbers):
    return sum(numbers)


def marked(mark, seconds):
    open(mark, "w").close()
    time.sleep(seconds)
    return seconds


def direct_links():
    return sum(node["direct_links"] for node in job_server.status()["nodes"])


def wait_for(what, test, limit=30.0):
    end = time.monotonic() + limit
    while not test():
        if time.monotonic() > end:
            raise SystemExit(f"timed out waiting for {what}: {job_server.status()['nodes']}")
        time.sleep(0.02)


wait_for("the direct links", lambda: direct_links() == 2)  # made in the background once the ppserver answered
print("direct links:", direct_links())
jobs = [job_server.submit(where, (i,), (), ("os",)) for i in range(200)]
values = [job() for job in jobs]
print("values:", [value for value, _ in values] == list(range(1, 201)))
print("pids:", " ".join(str(pid) for pid in sorted({pid for _, pid in values})))
print("limited:", job_server.submit(where, (1,), (), ("os",), timeout=30)()[0])
ref = job_server.put(list(range(1000)))
print("ref:", job_server.submit(total, (ref,))())
with tempfile.TemporaryDirectory() as folder:
    mark = os.path.join(folder, "started")
    running = job_server.submit(marked, (mark, 60), (), ("time",))
    wait_for("the job to start", lambda: os.path.exists(mark))
    start = time.monotonic()
    print("terminate:", running.terminate(), time.monotonic() - start < 1)
    try:
        running.result(5)
    except concurrent.futures.CancelledError:
        print("cancelled:", running.cancelled())
start = time.monotonic()
print("after:", job_server.submit(where, (0,), (), ("os",))()[0], time.monotonic() - start < 1)
wait_for("the direct links again", lambda: direct_links() == 2)
print("again:", direct_links())
job_server.wait()
print("stats:", sum(stat.njobs for stat in job_server.get_stats().values()))
job_server.destroy()
