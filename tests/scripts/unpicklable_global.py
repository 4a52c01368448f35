"""A global that cannot be pickled: jobs that read it fail naming it; others of the same module run."""

import os
import threading

import ppft as pp

PPSERVER = os.environ.get("PPSERVER")
job_server = pp.Server(0, ppservers=(PPSERVER,)) if PPSERVER else pp.Server(2)

LOCK = threading.Lock()
COUNTS = [5]


def locked_count():
    with LOCK:
        return COUNTS[0]


def maybe_locked(use_lock):
    if use_lock:
        with LOCK:
            return COUNTS[0]
    return COUNTS[0] + 1


def plain():
    return COUNTS[0] * 2


try:
    print(job_server.submit(locked_count)())
except NameError as exc:
    print("NameError", exc)
print(job_server.submit(maybe_locked, (False,))())
print(job_server.submit(plain)())
job_server.destroy()
