"""Issue 19's `put` scenario: `Server.put()` of a 64 MiB numpy array, then 1,000 jobs that each read it.

Two figures, each on local workers (`Server(2)`, ppft2) and through `ppserver -w 2` on loopback
(ppft2-remote): the time of the 1,000 jobs given the ref over the time of the same 1,000 jobs given a tiny
tuple, once a first job used the ref (target <= 1.2), and, on the ppserver, the bytes it received on the
client's connection over the array's size (target <= 1.1: shipped once, not once per job). Each child
alternates the two kinds of jobs and keeps the best of each; the children of each variant alternate too, and
the best child counts. The measuring is child_put.py's; every ppserver is killed by its process group.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from .impls import BenchSetupError
from .procs import Outcome, ppservers

if TYPE_CHECKING:
    from .runs import Run

__all__ = ["PUT_CHILD", "put"]

PUT_CHILD = os.path.join(os.path.dirname(os.path.abspath(__file__)), "child_put.py")
_CHILDREN = {True: 1, False: 3}  # per variant, by run.quick


def put(run: Run) -> None:
    quick = run.quick
    params = {"n": 200 if quick else 1000, "size_mib": 4 if quick else 64, "rounds": 1 if quick else 5,
              "secret": run.secret}  # fmt: skip
    note = (
        f"{params['n']:,} jobs, a {params['size_mib']} MiB numpy array; best of {_CHILDREN[quick]} children"
    )
    runs: dict[str, list[Outcome]] = {"ppft2": [], "ppft2-remote": []}
    why = "" if run.available("ppft2", "ppserver") else (run.impls["ppft2"].reason or "no ppserver")
    if not why:
        try:
            with ppservers(run.impls["ppft2"].ppserver_cmd, run.secret, 1, 2) as addresses:
                for _ in range(_CHILDREN[quick]):
                    runs["ppft2"].append(run.child("put", "ppft2", "ppft2", "classic", params, PUT_CHILD))
                    remote = {**params, "remote": addresses[0]}
                    runs["ppft2-remote"].append(
                        run.child("put", "ppft2", "ppft2-remote", "classic", remote, PUT_CHILD)
                    )
        except BenchSetupError as exc:
            why = str(exc)
    metric = "1,000 jobs reading a ref / with a tiny argument"
    for label, outcomes in runs.items():
        if not outcomes:
            run.skip("put", metric, label, "ratio", why)
            continue
        best = _best(outcomes, "ratio")
        run.add("put", metric, label, "ratio", best, "ratio", note)
        run.add("put", "ref jobs/s", label, "jobs/s", best, "ref_jobs_per_s", note)
    if runs["ppft2-remote"]:
        received = _best(runs["ppft2-remote"], "received_ratio")
        run.add("put", "bytes received by the ppserver / object size", "ppft2-remote", "ratio", received,
                "received_ratio", note)  # fmt: skip
    else:
        run.skip("put", "bytes received by the ppserver / object size", "ppft2-remote", "ratio", why)


def _best(outcomes: list[Outcome], key: str) -> Outcome:
    """The child with the lowest `key`, or the first failure (a failed child fails the figure)."""
    failed = next((o for o in outcomes if o.status != "ok"), None)
    if failed is not None:
        return failed
    return min(outcomes, key=lambda o: float(o.result[key]))
