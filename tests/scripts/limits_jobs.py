"""A user's program that puts limits on its jobs: a time limit, and stopping a running job (one line per
case). It picks its job server from the environment: PPSERVER="host:port" runs every job there."""

import concurrent.futures
import os
import tempfile
import time

import ppft as pp

PPSERVER = os.environ.get("PPSERVER")
OLD_PPSERVER = os.environ.get("OLD_PPSERVER")  # set: a ppft 2.0.0 ppserver, which cannot stop a running job
job_server = pp.Server(0, ppservers=(PPSERVER,)) if PPSERVER else pp.Server(2)


def sleepy(seconds):
    time.sleep(seconds)
    return seconds


def marked(mark, seconds):
    open(mark, "w").close()
    time.sleep(seconds)
    return seconds


def wait_for(path, limit=30.0):
    end = time.monotonic() + limit
    while not os.path.exists(path):
        if time.monotonic() > end:
            raise SystemExit(f"the job never started: {path} did not appear")
        time.sleep(0.01)


print("warm:", job_server.submit(sleepy, (0,), (), ("time",))())

start = time.monotonic()
slow = job_server.submit(sleepy, (30,), (), ("time",), timeout=1)
try:
    slow()
    print("timeout: no error")
except pp.JobTimeoutError as exc:
    took = time.monotonic() - start
    print("timeout:", took < 2, isinstance(exc, TimeoutError), "sleepy" in str(exc), "1 s" in str(exc))
    print("timeout message:", exc)
if not OLD_PPSERVER:  # there the timed-out job goes on running, and holds its worker
    start = time.monotonic()
    print("next:", job_server.submit(sleepy, (0,), (), ("time",))(), time.monotonic() - start < 1)

    template = pp.Template(job_server, sleepy, (), ("time",), timeout=0.5)
    try:
        template.submit(10)()
    except TimeoutError as exc:
        print("template:", type(exc).__name__)

with tempfile.TemporaryDirectory() as folder:
    mark = os.path.join(folder, "started")
    running = job_server.submit(marked, (mark, 30), (), ("time",))
    wait_for(mark)
    start = time.monotonic()
    print("terminate:", running.terminate(), time.monotonic() - start < 1)
    try:
        running.result(5)
    except concurrent.futures.CancelledError:
        print("cancelled:", running.cancelled(), running.done(), running.terminate() is False)
if not OLD_PPSERVER:
    start = time.monotonic()
    print("after:", job_server.submit(sleepy, (0,), (), ("time",))(), time.monotonic() - start < 1)
    job_server.wait()
    print("stats:", sum(stat.njobs for stat in job_server.get_stats().values()) >= 3)
job_server.destroy()
