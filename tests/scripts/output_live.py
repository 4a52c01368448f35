"""live_output=True: each line a job writes shows while it runs, prefixed with the job and the node.

The job prints a line, then waits (30 s at most) for the file MARKER, which whoever watches this script's
stdout creates once the line has shown: the job can only end early if its line travelled live. EXECUTOR=1
runs it through ppft.Executor(..., live_output=True) instead of pp.Server."""

import os

import ppft as pp

PPSERVER = os.environ.get("PPSERVER")  # "host:port": every job on that ppserver; unset: local workers
MARKER = os.environ.get("MARKER", "")


def progress(marker):
    import os
    import sys
    import time

    print("step 1 of 2", flush=True)
    print("a warning on the way", file=sys.stderr)
    deadline = time.monotonic() + 30
    while marker and not os.path.exists(marker) and time.monotonic() < deadline:
        time.sleep(0.01)
    print("step 2 of 2" if os.path.exists(marker) else "step 2 of 2, but nobody saw step 1 in time")
    sys.stdout.write("finished")  # no newline: the line is ended for it
    return 42


if os.environ.get("EXECUTOR"):
    ppservers = (PPSERVER,) if PPSERVER else ()
    with pp.Executor(0 if PPSERVER else 1, ppservers=ppservers, live_output=True) as executor:
        print("value", executor.submit(progress, MARKER).result())
else:
    if PPSERVER:
        job_server = pp.Server(0, ppservers=(PPSERVER,), live_output=True)
    else:
        job_server = pp.Server(1, live_output=True)
    job = job_server.submit(progress, (MARKER,))
    print("value", job())  # after the job's lines, which were printed as it wrote them
    print("again", job())  # nothing is printed twice
    job_server.destroy()
