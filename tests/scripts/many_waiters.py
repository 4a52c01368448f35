"""Many threads wait for jobs at once, as a threaded program does: each thread submits jobs one at a time
and waits for each; several threads wait for the same slow job; a few poll one with a short timeout. Every
one of them must be woken when its job is done, and nothing may be left waiting."""

import os
import sys
import threading
import time
from concurrent.futures import TimeoutError as FutureTimeoutError

import ppft as pp

PPSERVER = os.environ.get("PPSERVER")  # "host:port": every job on that ppserver; unset: local workers
job_server = pp.Server(0, ppservers=(PPSERVER,)) if PPSERVER else pp.Server(2)
TIMEOUT = 30.0


def double(x):
    return 2 * x


def pause_then_double(x, seconds):
    time.sleep(seconds)
    return 2 * x


totals = {"one at a time": 0, "same job": 0, "polled": 0}
lock = threading.Lock()


def add(kind, value):
    with lock:
        totals[kind] += value


def one_at_a_time(first):
    add("one at a time", sum(job_server.submit(double, (first + i,))() for i in range(25)))


def same_job(job):
    add("same job", job())


def polled(job):
    while True:
        try:
            value = job.result(timeout=0.005)
        except FutureTimeoutError:
            continue
        add("polled", value)
        return


slow = job_server.submit(pause_then_double, (1, 0.5), (), ("time",))
threads = [threading.Thread(target=one_at_a_time, args=(100 * n,), daemon=True) for n in range(12)]
threads += [threading.Thread(target=same_job, args=(slow,), daemon=True) for _ in range(8)]
threads += [threading.Thread(target=polled, args=(slow,), daemon=True) for _ in range(4)]
for thread in threads:
    thread.start()
deadline = time.monotonic() + TIMEOUT
for thread in threads:
    thread.join(max(0.0, deadline - time.monotonic()))
stuck = sum(thread.is_alive() for thread in threads)
if stuck:
    print(f"{stuck} thread(s) still waiting after {TIMEOUT:.0f} s", file=sys.stderr)
    os._exit(1)  # the stuck threads would keep destroy() from returning
for kind, total in totals.items():
    print(kind, total)
job_server.destroy()
