"""A 16 MiB numpy array in and out of a job on a real ppserver with one worker: the same bytes come back, and
on the ppserver's machine they go between the ppserver and its worker through shared segments, not the
pipes: the worker reads next to nothing from its pipe for the argument (`rchar` of its /proc/PID/io, in
MiB), the ppserver reads next to nothing from its workers for the value (its own `rchar`: a socket's bytes
are not counted there, `recv` is no `read`; an ssh node's server reads the argument from its stdin, 16 MiB
counted), the ppserver holds a segment while the job runs and none once it is done. The client gets the
value as a buffered pickle, never as a mapped field (those never leave a machine), and maps no segment of
anyone's, nor makes one (it has no local worker to map it). Then a job that times out and one that is
terminated with a big argument, and a worker SIGKILLed while it holds segments: the ppserver keeps no
segment and no descriptor more.

PPSERVER ("host:port", or an ssh:// node), PPSERVER_PID (the ppserver's pid; unset: the workers' parent),
SEAL ("0": an unsealed loopback link), LIMITS ("0": no timed-out or terminated job), PPFT_SEGMENTS ("0",
the ppserver's too: the same through the pipes, which the figures then show)."""

import os
import time

import numpy as np

import ppft as pp
import ppft_worker.mapped
from ppft_protocol import is_pickled
from ppft_worker.mapped import is_mapped

PPSERVER = os.environ["PPSERVER"]
SERVER_PID = int(os.environ.get("PPSERVER_PID", "0"))  # 0: the parent of the job's worker (an ssh node's)
SEAL = os.environ.get("SEAL", "1") != "0"
LIMITS = os.environ.get("LIMITS", "1") != "0"  # "0": no timed-out or terminated job
SEGMENTS = os.environ.get("PPFT_SEGMENTS") != "0"  # "0": the ppserver passes everything through its pipes
MiB = 1 << 20

opened = []  # every segment this process maps: none, it only talks to a ppserver
_open_field = ppft_worker.mapped.open_field


def counting_open_field(field):
    opened.append(len(field))
    return _open_field(field)


ppft_worker.mapped.open_field = counting_open_field


def rchar(pid):
    with open(f"/proc/{pid}/io") as f:
        return int(dict(line.split(": ") for line in f.read().splitlines())["rchar"])


def segments_of(pid):
    fds = os.listdir(f"/proc/{pid}/fd")
    links = []
    for fd in fds:
        try:
            links.append(os.readlink(f"/proc/{pid}/fd/{fd}"))
        except FileNotFoundError:
            pass
    return links.count("/memfd:ppft (deleted)"), len(links)


def echo(a, server_pid):
    import os

    fds = os.listdir(f"/proc/{server_pid}/fd")
    links = []
    for fd in fds:
        try:
            links.append(os.readlink(f"/proc/{server_pid}/fd/{fd}"))
        except FileNotFoundError:
            pass
    return a, links.count("/memfd:ppft (deleted)")


def parent():
    import os

    return os.getppid()


def worker_rchar():
    import os

    with open("/proc/self/io") as f:
        return int(dict(line.split(": ") for line in f.read().splitlines())["rchar"]), os.getpid()


def wait_then(a, seconds):
    import time

    time.sleep(seconds)
    return float(a[0])


def die(a):
    import os
    import signal

    os.kill(os.getpid(), signal.SIGKILL)


def wait_for(predicate, what, timeout=15.0):
    end = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > end:
            raise SystemExit(f"timed out waiting for {what}")
        time.sleep(0.02)


job_server = pp.Server(0, ppservers=(PPSERVER,), seal=SEAL)
big = np.arange(2 * 1024 * 1024, dtype=np.float64)  # 16 MiB
SERVER_PID = SERVER_PID or job_server.submit(parent, ())()
job_server.submit(echo, (big, SERVER_PID))()  # numpy imported in the worker, the connection warm
before = segments_of(SERVER_PID)
worker_before, worker_pid = job_server.submit(worker_rchar, ())()
server_before = rchar(SERVER_PID)
job = job_server.submit(echo, (big, SERVER_PID))
client_made = segments_of(os.getpid())[0]  # a snapshot in a segment: only for local workers to map
back, held_while_running = job()
worker_after, _ = job_server.submit(worker_rchar, ())()
server_after = rchar(SERVER_PID)
print("echo equal:", bool((back == big).all()), "writable:", back.flags.writeable)
print("worker read (MiB):", round((worker_after - worker_before) / MiB))
print("ppserver read (MiB):", round((server_after - server_before) / MiB))
print("ppserver held a segment while the job ran:", held_while_running > 0)
wait_for(lambda: segments_of(SERVER_PID) == before, "the ppserver's descriptors back to their count")
print("ppserver holds afterwards:", segments_of(SERVER_PID)[0])
raw = job._raw.value
print("the client got a buffered pickle:", is_pickled(raw), "a mapped field:", is_mapped(raw))
print("the client made segments:", client_made)
del back, job, raw

job_server.submit(echo, (big, SERVER_PID))()  # a value mapped and released: the worker holds nothing now
killed = job_server.submit(die, (big,))
try:
    killed()
except Exception as exc:
    print("killed:", type(exc).__name__)
wait_for(lambda: segments_of(SERVER_PID) == before, "the ppserver's descriptors back to their count")
print("after the kill the ppserver holds:", segments_of(SERVER_PID)[0], "and its descriptors as before")

if LIMITS:
    timed_out = job_server.submit(wait_then, (big, 30.0), timeout=0.5)
    try:
        timed_out()
    except Exception as exc:
        print("timed out:", type(exc).__name__)
    wait_for(lambda: segments_of(SERVER_PID)[0] == 0, "the timed-out job's segment closed")
    print("after the timeout the ppserver holds:", segments_of(SERVER_PID)[0])

    if SEGMENTS:
        stopped = job_server.submit(wait_then, (big, 30.0))
        wait_for(lambda: segments_of(SERVER_PID)[0] > 0, "the running job's segment")
        print("terminated:", stopped.terminate())
        wait_for(lambda: segments_of(SERVER_PID)[0] == 0, "the terminated job's segment closed")
        print("after terminate the ppserver holds:", segments_of(SERVER_PID)[0])

print("client mapped:", len(opened))
job_server.destroy()
