"""What travels between a client and nodes of other Pythons: run with one Python, a ppserver of another."""

import os
import sys
from collections import namedtuple
from dataclasses import dataclass, field

import ppft as pp

PPSERVER = os.environ.get("PPSERVER")
job_server = pp.Server(0, ppservers=(PPSERVER,)) if PPSERVER else pp.Server(2)


def square(x):
    return x * x


def outer(k):
    return lambda x: x * k + 1


class Point:
    def __init__(self, x, y):
        self.x, self.y = x, y

    def norm2(self):
        return self.x * self.x + self.y * self.y


@dataclass
class Item:
    name: str
    price: float
    tags: list = field(default_factory=list)

    def label(self):
        return f"{self.name}: {self.price:.2f}"


Pair = namedtuple("Pair", "left right")
CATALOG = {"pen": Item("pen", 1.5, ["office"])}


def labels(extra):
    return [item.label() for item in CATALOG.values()] + [extra.label()]


def swap(pair):
    return Pair(pair.right, pair.left)


TABLE = {"a": 1, "b": [1, 2, 3]}
ORIGIN = Point(3, 4)


def use_table(key):
    return TABLE[key], ORIGIN.norm2()


class MyError(Exception):
    pass


def fails(x):
    raise MyError(f"bad {x}")


def make_adder(n):
    return lambda v: v + n


def apply_all(fn, values):
    return [fn(v) for v in values]


def which_python():
    return "{}.{}".format(*sys.version_info[:2])


print("client", "{}.{}".format(*sys.version_info[:2]), "node", job_server.submit(which_python)())
print("source", [job() for job in [job_server.submit(square, (i,)) for i in range(5)]])
print("lambda", job_server.submit(lambda x: x + 100, (1,))())
print("closure", job_server.submit(outer(3), (2,))())
print("module data", job_server.submit(use_table, ("b",))())
TABLE["b"].append(4)
print("module data changed", job_server.submit(use_table, ("b",))())
print("argument of a script class", job_server.submit(Point.norm2, (Point(1, 2),))())
print("dataclasses in module data and arguments", job_server.submit(labels, (Item("ink", 4),))())
print("a namedtuple there and back", job_server.submit(swap, (Pair(1, 2),))())
try:
    job_server.submit(fails, (5,))()
except MyError as exc:
    print("exception", type(exc).__name__, exc, type(exc.__cause__).__name__)
print("a lambda as result", job_server.submit(make_adder, (5,))()(1))
print("a lambda as argument", job_server.submit(apply_all, (lambda v: -v, [1, 2]))())
job_server.destroy()
