"""Module-level data read by a job: with and without globals=, through a helper, of every plain kind."""

import os

import ppft as pp

PPSERVER = os.environ.get("PPSERVER")  # "host:port": every job on that ppserver; unset: local workers
job_server = pp.Server(0, ppservers=(PPSERVER,)) if PPSERVER else pp.Server(2)

TABLE = {"a": 1, "b": 2}
ORDER = ["a", "b"]
TAGS = {"x", "y"}
PAIR = (1, [2, 3])
SCALE = 10


class Point:
    def __init__(self, x, y):
        self.x = x
        self.y = y

    def norm1(self):
        return abs(self.x) + abs(self.y) + SCALE


ORIGIN = Point(3, -4)
POINTS = [Point(1, 1), Point(2, 2)]


def score(k):
    return TABLE[k] * SCALE + ORDER.index(k)


def weight(k):  # reads module data itself, and calls a helper that reads more
    return score(k) + len(TAGS) + PAIR[1][1]


def shapes():
    return ORIGIN.norm1(), [p.norm1() for p in POINTS], type(ORIGIN).__name__


def all_points():  # the class the job names and the class of the data it reads are one class
    return all(isinstance(p, Point) for p in [ORIGIN, *POINTS])


print(job_server.submit(score, ("b",), globals=globals())())
print(job_server.submit(score, ("b",))())
print(job_server.submit(weight, ("a",))())
print(job_server.submit(shapes)())
print(job_server.submit(all_points)())
job_server.destroy()
