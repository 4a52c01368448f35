"""A user's program that starts a long job on a ppserver and is then killed (the test SIGKILLs it)."""

import os
import sys
import time

import ppft as pp

PPSERVER = os.environ["PPSERVER"]  # "host:port"
MARK = sys.argv[1]  # a file the job creates when it starts


def long_job(mark, seconds):
    open(mark, "w").close()
    time.sleep(seconds)
    return seconds


job_server = pp.Server(0, ppservers=(PPSERVER,))
job = job_server.submit(long_job, (MARK, 60), (), ("time",))
print("submitted", flush=True)
print(job())
