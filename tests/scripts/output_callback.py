"""A classic callback: the job's output is printed before the callback runs, as ppft 1.7 does."""

import os
import sys

import ppft as pp

PPSERVER = os.environ.get("PPSERVER")  # "host:port": every job on that ppserver; unset: local workers
job_server = pp.Server(0, ppservers=(PPSERVER,)) if PPSERVER else pp.Server(2)


def square(x):
    print(f"squaring {x}")
    print(f"{x} is fine", file=sys.stderr)
    return x * x


def done(tag, value):
    print(f"callback {tag}: {value}")


for x in (3, 4):
    job_server.submit(square, (x,), callback=done, callbackargs=(f"#{x}",), group=str(x)).wait()
job_server.wait()
print("end")
job_server.destroy()
