"""A name that is both a module-level constant and a local, a parameter or an attribute elsewhere."""

import os
import threading

import ppft as pp

PPSERVER = os.environ.get("PPSERVER")
job_server = pp.Server(0, ppservers=(PPSERVER,)) if PPSERVER else pp.Server(2)

LIMIT = 100
value = [7]  # also an attribute name below
index = threading.Lock()  # a global no job reads (only an attribute of that name), unpicklable: no matter


def local_limit(x):
    LIMIT = 3  # a local of the same name
    return x * LIMIT


def param_limit(x, LIMIT=5):
    return x * LIMIT


def global_limit(x):
    return x * LIMIT


class Box:
    def __init__(self):
        self.value = 1


def attribute_and_global():
    return Box().value + value[0] + ["a", "b"].index("b")


print(job_server.submit(local_limit, (2,))())
print(job_server.submit(param_limit, (2,))())
print(job_server.submit(global_limit, (2,))())
print(job_server.submit(attribute_and_global)())
LIMIT = 1000
print(job_server.submit(global_limit, (2,))())
job_server.destroy()
