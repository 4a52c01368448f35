"""Instances of the script's own dataclasses and named tuples, held in module data."""

import os
from collections import namedtuple
from dataclasses import dataclass, field

import ppft as pp

PPSERVER = os.environ.get("PPSERVER")
job_server = pp.Server(0, ppservers=(PPSERVER,)) if PPSERVER else pp.Server(2)


@dataclass
class Item:
    name: str
    price: float
    tags: list = field(default_factory=list)


Pair = namedtuple("Pair", "left right")

CATALOG = {"pen": Item("pen", 1.5, ["office"]), "ink": Item("ink", 4.0)}
PAIRS = [Pair(1, 2), Pair(3, 4)]
NESTED = {"levels": [frozenset({1, 2}), (1.5, None, b"x")], "empty": {}}


def total():
    return sum(item.price for item in CATALOG.values())


def describe():
    return [p.left + p.right for p in PAIRS], all(isinstance(p, Pair) for p in PAIRS)


def nested():
    return sorted(NESTED["levels"][0]), NESTED["levels"][1], NESTED["empty"]


print(job_server.submit(total)())
CATALOG["pen"].price = 2.0
print(job_server.submit(total)())
print(job_server.submit(describe)())
print(job_server.submit(nested)())
job_server.destroy()
