"""Big numpy arrays in and out of jobs: the same values come back, writable as they were, whatever the link.

Prints whether the 16 MiB result travelled with out-of-band buffers (protocol version 2) or as a plain
pickle (a version-1 ppserver), so the test can tell the two ways apart."""

import os

import numpy as np

import ppft as pp
from ppft_protocol import is_pickled

PPSERVER = os.environ.get("PPSERVER")  # "host:port": every job on that ppserver; unset: local workers


def echo(a):
    return a


def add_one_in_place(a):
    a += 1  # the argument arrived writable, as a plain pickle gives it
    return a


def make(n):
    import numpy

    return numpy.arange(n, dtype=numpy.int64)


def describe(arrays):
    return [(a.dtype.str, a.shape, float(a.sum())) for a in arrays]


job_server = pp.Server(0, ppservers=(PPSERVER,)) if PPSERVER else pp.Server(2)
big = np.arange(2 * 1024 * 1024, dtype=np.float64)  # 16 MiB
job = job_server.submit(echo, (big,))
back = job()
print("echo equal:", bool((back == big).all()), "writable:", back.flags.writeable, "dtype:", back.dtype)
print("out of band:", is_pickled(job._raw.value))
print("in place:", job_server.submit(add_one_in_place, (np.zeros(100_000),))()[:3])
print("made:", job_server.submit(make, (5,))())
made = job_server.submit(make, (1_000_000,))  # small arguments, an 8 MB value
print("made big:", int(made()[-1]), "out of band:", is_pickled(made._raw.value))
shapes = (np.ones((300, 400)), np.ones(10), np.ones((2, 50_000), dtype=np.float32)[:, ::2])
print("several:", job_server.submit(describe, (shapes,), modules=("numpy",))())
same = np.ones(20_000)
twice = job_server.submit(echo, ((same, same),))()
print("one object twice:", twice[0] is twice[1])
reused = np.zeros(100_000)
jobs = []
for i in range(10):
    reused[:] = i  # each job gets the array as it was at its submit
    jobs.append(job_server.submit(echo, (reused,)))
print("as at submit:", [int(job()[0]) for job in jobs])
print("tiny:", job_server.submit(abs, (-3,))())
template = pp.Template(job_server, echo)
print("template:", bool((template.submit(big)() == big).all()))
job_server.destroy()

executor = pp.Executor(0, ppservers=(PPSERVER,)) if PPSERVER else pp.Executor(2)
with executor:
    print("executor submit:", bool((executor.submit(echo, big).result() == big).all()))
    halves = list(executor.map(echo, [big[:1000], big[1000:]]))
    print("executor map:", bool((np.concatenate(halves) == big).all()))
