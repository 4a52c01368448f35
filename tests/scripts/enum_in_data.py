"""An Enum of the script in module data (run as a file: an Enum class has no by-value pickle)."""

import enum
import os

import ppft as pp

PPSERVER = os.environ.get("PPSERVER")
job_server = pp.Server(0, ppservers=(PPSERVER,)) if PPSERVER else pp.Server(2)


class Color(enum.Enum):
    RED = 1
    BLUE = 2


FAVOURITE = [Color.BLUE]


def describe():
    return FAVOURITE[0].name, FAVOURITE[0] is Color.BLUE


print(job_server.submit(describe)())
FAVOURITE[0] = Color.RED
print(job_server.submit(describe)())
job_server.destroy()
