"""A job that prints, then takes its worker down with it: what it printed is not lost.

DEATH picks how: "exit" (os._exit(3) right after a print), "partial" (sys.stdout.write without a newline,
then os._exit), "segfault" (ctypes.string_at(0)), "kill" (SIGKILL from outside, by this script, while the
job sleeps: the job writes its worker's pid to PIDFILE)."""

import os
import signal
import time

import ppft as pp

PPSERVER = os.environ.get("PPSERVER")  # "host:port": every job on that ppserver; unset: local workers
job_server = pp.Server(0, ppservers=(PPSERVER,)) if PPSERVER else pp.Server(1)
DEATH = os.environ.get("DEATH", "exit")
PIDFILE = os.environ.get("PIDFILE", "")


def doomed(how, pidfile):
    import os
    import sys

    print("working on item 7")
    print("warning: item 7 looks odd", file=sys.stderr)
    if how == "exit":
        print("about to exit")
        os._exit(3)
    if how == "partial":
        sys.stdout.write("half a line")
        os._exit(3)
    if how == "segfault":
        import ctypes

        print("about to read address 0")
        ctypes.string_at(0)
    if how == "kill":
        import time

        print("sleeping, to be killed")
        with open(pidfile + ".tmp", "w") as f:
            f.write(str(os.getpid()))
        os.replace(pidfile + ".tmp", pidfile)
        time.sleep(60)
    return "survived"


job = job_server.submit(doomed, (DEATH, PIDFILE))
if DEATH == "kill":
    killed = set()
    deadline = time.monotonic() + 60
    while not job.done() and time.monotonic() < deadline:
        try:
            with open(PIDFILE) as f:
                pid = int(f.read())
        except (OSError, ValueError):
            pid = 0
        if pid and pid not in killed:
            killed.add(pid)
            os.kill(pid, signal.SIGKILL)
        time.sleep(0.02)
try:
    job()
except pp.WorkerLostError as exc:  # the job's text came just before, on its own streams
    print(f"WorkerLostError: {exc}")
print("next job:", job_server.submit(pow, (2, 10))())
job_server.destroy()
