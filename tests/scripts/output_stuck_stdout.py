"""The caller's stdout is a pipe nobody reads (STDOUT=stuck) or is closed (STDOUT=closed): jobs go on, values
arrive (written to stderr), with and without live output."""

import os
import sys

import ppft as pp

PPSERVER = os.environ.get("PPSERVER")  # "host:port": every job on that ppserver; unset: local workers
if os.environ.get("STDOUT") == "closed":
    sys.stdout.close()


def noisy(n):
    for i in range(n):
        print(f"line {i} " + "x" * 100)
    return n


for live in (True, False):
    if PPSERVER:
        job_server = pp.Server(0, ppservers=(PPSERVER,), live_output=live)
    else:
        job_server = pp.Server(2, live_output=live)
    jobs = [job_server.submit(noisy, (2000,)) for _ in range(4)]  # 880 kB: far more than a pipe holds
    print("live" if live else "plain", "values", [job() for job in jobs], file=sys.stderr, flush=True)
    job_server.destroy()
