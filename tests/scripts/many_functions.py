"""Many distinct functions, each large (a 1 MiB constant), each counting its calls on the worker.

Run twice over: in order, then in reverse. Every job must run; a function whose namespace the worker still
holds counts 2 the second time, one it forgot (and got again) counts 1.
"""

import os

import ppft as pp

COUNT = int(os.environ.get("COUNT", "80"))
PAD = "x" * (1 << 20)

functions = []
for i in range(COUNT):
    namespace = {}
    exec(  # functions made at run time: no source to ship, so they travel pickled, constant and all
        f"def f{i}():\n"
        f"    global calls\n"
        f"    calls = globals().get('calls', 0) + 1\n"
        f"    return calls, len({PAD!r})\n",
        namespace,
    )
    functions.append(namespace[f"f{i}"])

PPSERVER = os.environ.get("PPSERVER")  # "host:port": every job on that ppserver; unset: one local worker
job_server = pp.Server(0, ppservers=(PPSERVER,)) if PPSERVER else pp.Server(1)
first = [job_server.submit(f)() for f in functions]
second = [job_server.submit(f)() for f in reversed(functions)]
assert {size for _, size in first + second} == {len(PAD)}, "a job did not run"
print(" ".join(str(calls) for calls, _ in first))
print(" ".join(str(calls) for calls, _ in second))
job_server.destroy()
