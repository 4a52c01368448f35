"""Large arrays and bytes in and out of local workers: through shared memory (or the pipes, PPFT_SEGMENTS=0),
the same values come back, writable as they were, and no segment stays open once the jobs are done.

Prints "shared: True" when the 16 MiB value arrived mapped from a shared segment (a `/memfd:ppft` mapping
in this process) and the worker got its argument the same way; "shared: False" when the pipes carried them.
"""

import gc
import os

import numpy as np

import ppft as pp
from ppft_worker.segments import open_segments

SEGMENT = "/memfd:ppft (deleted)"


def mapped_here():
    """How many mappings of shared segments this process has."""
    with open("/proc/self/maps") as maps:
        return sum(line.rstrip().endswith(SEGMENT) for line in maps)


def open_here():
    """How many shared segments this process holds open."""
    fds = os.listdir("/proc/self/fd")
    return sum(
        os.readlink(f"/proc/self/fd/{fd}") == SEGMENT for fd in fds if os.path.exists(f"/proc/self/fd/{fd}")
    )


def echo(a):
    return a


def echo_seen(a):
    with open("/proc/self/maps") as maps:  # the argument mapped from the client's segment?
        seen = sum(line.rstrip().endswith("/memfd:ppft (deleted)") for line in maps)
    return a, seen > 0


def add_one_in_place(a):
    a += 1  # the argument arrived writable, as a plain pickle gives it
    return a


def segments_open():
    import os

    fds = os.listdir("/proc/self/fd")
    links = [os.readlink(f"/proc/self/fd/{fd}") for fd in fds if os.path.exists(f"/proc/self/fd/{fd}")]
    return links.count("/memfd:ppft (deleted)")


job_server = pp.Server(2)
big = np.arange(2 * 1024 * 1024, dtype=np.float64)  # 16 MiB
job = job_server.submit(echo_seen, (big,))
back, seen = job()
print("shared:", mapped_here() > 0 and seen)
print("echo equal:", bool((back == big).all()), "writable:", back.flags.writeable, "dtype:", back.dtype)
back[0] = -1.0  # copy-on-write: the value is this process's own
print("original kept:", big[0] == 0.0)
bumped = job_server.submit(add_one_in_place, (big,))()
print("in place:", bumped[:3], "original kept:", big[:3])
read_only = np.ones(1 << 18)
read_only.flags.writeable = False
print("read-only stays read-only:", not job_server.submit(echo, (read_only,))().flags.writeable)
data = bytes(range(256)) * (16 * 4096)  # 16 MiB of bytes, no numpy needed
back_bytes = job_server.submit(echo, (data,))()
print("bytes:", type(back_bytes).__name__, back_bytes == data)
several = job_server.submit(echo, ((big, big[: 1 << 18], np.ones(3)),))()
print("several:", [a.shape for a in several], several[0] is not several[1])
template = pp.Template(job_server, echo)
print("template:", all(bool((job() == big).all()) for job in [template.submit(big) for _ in range(4)]))
print("workers hold none:", sum(job_server.submit(segments_open, ())() for _ in range(4)))
job_server.destroy()

executor = pp.Executor(2)
with executor:
    print("executor submit:", bool((executor.submit(echo, big).result() == big).all()))
    parts = list(executor.map(echo, [big] * 6))
    print("executor map:", all(bool((part == big).all()) for part in parts))
del job, back, bumped, back_bytes, several, template, parts, read_only
gc.collect()
print("client holds:", open_segments(), open_here(), mapped_here())
