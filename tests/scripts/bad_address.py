"""A typo in a ppservers entry: refused by Server() with a ValueError that names the entry."""

import os

import ppft as pp

PPSERVER = os.environ.get("PPSERVER")  # "host:port": every job on that ppserver; unset: local workers

try:
    pp.Server(0 if PPSERVER else 2, ppservers=("node1..example.org:60000", PPSERVER or "127.0.0.1:60000"))
except ValueError as exc:
    print("ValueError:", exc)

job_server = pp.Server(0, ppservers=(PPSERVER,)) if PPSERVER else pp.Server(2)
print(job_server.submit(abs, (-3,))())
job_server.destroy()
