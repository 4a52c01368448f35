"""Jobs whose values nobody asks for: what they printed still shows, once, by destroy() at the latest.

ENDING picks how the script ends: "destroy" (job_server.destroy()), "exit" (it just ends: the interpreter's
exit destroys the server), "with" (a `with pp.Server(...)` block)."""

import os
import pickle
import sys

import ppft as pp

PPSERVER = os.environ.get("PPSERVER")  # "host:port": every job on that ppserver; unset: local workers
ENDING = os.environ.get("ENDING", "destroy")


def make_server():
    return pp.Server(0, ppservers=(PPSERVER,)) if PPSERVER else pp.Server(2)


def chatty(n):
    import sys

    print(f"job {n} says hello")
    print(f"job {n} complains", file=sys.stderr)
    return n


def run(job_server):
    asked = job_server.submit(chatty, (1,))
    print("asked:", asked())  # shown now, and never again
    for n in (2, 3):
        job_server.submit(chatty, (n,))  # their values are never asked for
    raw = job_server.submit(chatty, (4,))
    value, text = pickle.loads(raw(raw_result=True))  # the output is handed over here
    print("raw:", value, repr(text))
    job_server.wait()
    print("all done")  # job 2 and 3's text has not shown yet: nobody asked
    sys.stdout.flush()


if ENDING == "with":
    with make_server() as job_server:
        run(job_server)
    print("after the with block")
else:
    job_server = make_server()
    run(job_server)
    if ENDING == "destroy":
        job_server.destroy()
        print("after destroy")
