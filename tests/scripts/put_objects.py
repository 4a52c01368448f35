"""Objects shipped once with put(): a job given the ref gets the object, through submit, Template,
Executor.submit and Executor.map, at any depth in the arguments (inside an instance of a class of this script,
which dill pickles); a released ref is refused at submit."""

import os

import ppft as pp

PPSERVER = os.environ.get("PPSERVER")  # "host:port": every job on that ppserver; unset: local workers


def total(table, k):
    return sum(table["values"]) + k


class Box:  # defined here, in __main__: its instances travel by value, pickled by dill
    def __init__(self, item):
        self.item = item


def unbox(box):
    return len(box.item["values"])


def both(pair):
    first, second = pair
    return len(first) + len(second)


job_server = pp.Server(0, ppservers=(PPSERVER,)) if PPSERVER else pp.Server(2)
table = {"values": list(range(100_000))}
ref = job_server.put(table)
print("submit:", sorted({job_server.submit(total, (ref, 0))() for _ in range(20)}))
template = pp.Template(job_server, total)
print("template:", template.submit(ref, 1)())
print("in a dill-pickled argument:", job_server.submit(unbox, (Box(ref),))())
with job_server.put("abc") as small:
    print("nested:", job_server.submit(both, ([ref, small],))())
try:
    job_server.submit(both, ((small, small),))
except pp.RefError as exc:
    print("after release:", type(exc).__name__, "released" in str(exc))
job_server.destroy()

with pp.Executor(0 if PPSERVER else 2, ppservers=(PPSERVER,) if PPSERVER else ()) as executor:
    ref = executor.put(table)
    print("executor submit:", executor.submit(total, ref, 2).result())
    print("executor map:", list(executor.map(total, [ref] * 3, range(3))))
