"""Jobs with no usable node wait, and say so periodically; they run as soon as a node is there."""

import os
import time

import ppft as pp
from ppft_client import waiting

waiting.WAIT_REPORT_INTERVAL = float(os.environ.get("WAIT_REPORT_INTERVAL", "30"))  # 30 s unless a test says
NOBODY = os.environ["NOBODY"]  # "host:port" where nothing listens
PPSERVER = os.environ["PPSERVER"]  # a real ppserver

job_server = pp.Server(0, ppservers=(NOBODY,))
jobs = [job_server.submit(pow, (2, n)) for n in range(3)]
time.sleep(4 * waiting.WAIT_REPORT_INTERVAL)
print("done before a node came:", any(job.done() for job in jobs))
job_server.connect1(*PPSERVER.split(":"))
print([job() for job in jobs])
job_server.destroy()
