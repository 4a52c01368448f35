"""Every ppserver refuses this client for good (here: a wrong secret) and there are no local workers: the
job fails with NoNodeError, which names each node and why, instead of waiting forever."""

import os

import ppft as pp

PPSERVER = os.environ["PPSERVER"]  # a real ppserver, which has another secret

job_server = pp.Server(0, ppservers=(PPSERVER,), secret="not-the-right-secret")
job = job_server.submit(abs, (-1,))
try:
    job()
except pp.NoNodeError as exc:
    print("NoNodeError:", exc)
job_server.set_ncpus(1)  # local workers: new jobs run again
print(job_server.submit(abs, (-1,))())
job_server.destroy()
