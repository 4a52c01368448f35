"""A user's script that logs ppft's warnings to stderr and waits until ppft warns about its ppserver."""

import logging
import os
import threading

import ppft as pp

logging.basicConfig(format="%(asctime)s - %(name)s - %(levelname)s - %(message)s")
warned = threading.Event()


class Flag(logging.Handler):
    def emit(self, record):
        if record.levelno >= logging.WARNING and record.name.startswith("ppft"):
            warned.set()


logging.getLogger("ppft").addHandler(Flag())
job_server = pp.Server(1, ppservers=(os.environ["PPSERVER"],))
print(job_server.submit(abs, (-3,))())
print("warned" if warned.wait(30) else "never warned")
job_server.destroy()
