"""A local worker killed (SIGKILL) while it holds shared segments (the value of the job before, the
argument of the job it runs): the job runs again and succeeds, and no segment is left open anywhere: not in
this process, not in the worker that replaced it, not in the dead one (its pid is gone).

MARKER (environment): a file path, the marker that makes the job kill its worker on its first attempt
only."""

import gc
import os

import numpy as np

import ppft as pp
from ppft_worker.segments import open_segments

SEGMENT = "/memfd:ppft (deleted)"
MARKER = os.environ["MARKER"]


def fds_here():
    fds = os.listdir("/proc/self/fd")
    links = [os.readlink(f"/proc/self/fd/{fd}") for fd in fds if os.path.exists(f"/proc/self/fd/{fd}")]
    return links.count(SEGMENT)


def mapped_here():
    with open("/proc/self/maps") as maps:
        return sum(line.rstrip().endswith(SEGMENT) for line in maps)


def echo_with_pid(a):
    import os

    return a, os.getpid()


def die_first_time(a, marker):
    import os
    import signal

    if not os.path.exists(marker):
        with open(marker, "w") as f:
            f.write(str(os.getpid()))
        os.kill(os.getpid(), signal.SIGKILL)  # its argument mapped, the previous value maybe still held
    return float(a.sum()), os.getpid()


def segments_open():
    import os

    fds = os.listdir("/proc/self/fd")
    links = [os.readlink(f"/proc/self/fd/{fd}") for fd in fds if os.path.exists(f"/proc/self/fd/{fd}")]
    return links.count("/memfd:ppft (deleted)")


job_server = pp.Server(1)
big = np.arange(2 * 1024 * 1024, dtype=np.float64)  # 16 MiB
before = job_server.submit(echo_with_pid, (big,))  # a value in a segment, then a worker that dies
dying = job_server.submit(die_first_time, (big, MARKER))
value, _ = before()
total, second_pid = dying()
with open(MARKER) as f:
    dead_pid = int(f.read())
print("value:", bool((value == big).all()))
print("rerun:", total == float(big.sum()), "on another worker:", second_pid != dead_pid)
print("dead worker gone:", not os.path.exists(f"/proc/{dead_pid}"))
print("replacement holds:", job_server.submit(segments_open, ())())
print("client holds open:", open_segments(), fds_here())
job_server.destroy()
del before, dying, value
gc.collect()
print("client maps:", mapped_here())
