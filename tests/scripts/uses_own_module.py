"""A function of a module the user wrote, next to the script: what it reads from that module travels."""

import os

import travel_helpers
from travel_helpers import convert

import ppft as pp

PPSERVER = os.environ.get("PPSERVER")
job_server = pp.Server(0, ppservers=(PPSERVER,)) if PPSERVER else pp.Server(2)

print(job_server.submit(convert, (10,))())
travel_helpers.RATES["eur"] = 3
print(job_server.submit(travel_helpers.convert, (10,))())
job_server.destroy()
