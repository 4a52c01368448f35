"""A job's print() and its writes to sys.stderr: each on the caller's own stream, when the value is asked."""

import os
import time

import ppft as pp

PPSERVER = os.environ.get("PPSERVER")  # "host:port": every job on that ppserver; unset: local workers
job_server = pp.Server(0, ppservers=(PPSERVER,)) if PPSERVER else pp.Server(2)


def report(name, delay):
    import sys
    import time

    for step in (1, 2, 3):
        print(f"{name} out {step}")
        if step == 2:
            print(f"{name} err {step}", file=sys.stderr)
        time.sleep(delay)
    sys.stdout.write(f"{name} done")  # no newline: it stays as written
    return name.upper()


print("before the jobs")
first = job_server.submit(report, ("a", 0.05))
second = job_server.submit(report, ("b", 0.01))  # runs at the same time, finishes first
time.sleep(0.5)
print("jobs submitted")
print("value", first())  # a's text comes now, all of it, before the value is printed
print("value", second())
print("again", first())  # printed once only
job_server.destroy()
