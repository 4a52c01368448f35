"""Progress bars with tqdm over ppft jobs, the three ways people write them: as_completed over the jobs,
a done-callback per job, and Executor.map. The first bar moves while its jobs still run."""

import os
import threading
from concurrent.futures import as_completed

from tqdm import tqdm

import ppft as pp

PPSERVER = os.environ.get("PPSERVER")  # "host:port": every job on that ppserver; unset: local workers
job_server = pp.Server(0, ppservers=(PPSERVER,)) if PPSERVER else pp.Server(2)


def square(x):
    return x * x


def nap(seconds):
    import time

    time.sleep(seconds)
    return seconds


naps = [job_server.submit(nap, (0.1,)) for _ in range(20)]
done_at_first = None
for _job in tqdm(as_completed(naps), total=len(naps), desc="one by one"):
    if done_at_first is None:
        done_at_first = sum(nap_job.done() for nap_job in naps)
print(done_at_first < len(naps))  # the bar moved while most jobs still ran (2 workers, 1 s of work)

jobs = [job_server.submit(square, (i,)) for i in range(300)]
total = sum(job.result() for job in tqdm(as_completed(jobs), total=len(jobs), desc="as_completed"))
print(total)

bar = tqdm(total=200, desc="callbacks")
done = threading.Event()


def tick(_job):
    bar.update()
    if bar.n == bar.total:
        done.set()


for i in range(200):
    job_server.submit(square, (i,)).add_done_callback(tick)
print(done.wait(60))
bar.close()
job_server.destroy()

executor = pp.Executor(0, ppservers=(PPSERVER,)) if PPSERVER else pp.Executor(2)
with executor:
    print(sum(tqdm(executor.map(square, range(100)), total=100, desc="map")))
