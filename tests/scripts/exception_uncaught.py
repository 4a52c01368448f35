"""A job's exception that nobody catches: Python prints it, with where it happened on the worker."""

import os

import ppft as pp

PPSERVER = os.environ.get("PPSERVER")  # "host:port": every job on that ppserver; unset: local workers
job_server = pp.Server(0, ppservers=(PPSERVER,)) if PPSERVER else pp.Server(2)


class QuotaError(Exception):
    def __init__(self, user, limit):
        super().__init__(f"{user} is over the quota of {limit}")
        self.user = user


def over_quota(user):
    raise QuotaError(user, 3)


job_server.submit(over_quota, ("bob",), (QuotaError,))()
