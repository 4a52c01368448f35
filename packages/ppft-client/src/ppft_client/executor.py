"""`Executor`: a real `concurrent.futures.Executor` over ppft's machinery, local and remote.

    with ppft.Executor(4) as ex:
        squares = list(ex.map(pow, range(1000), [2] * 1000))

Jobs already travel in batches on the wire, so `map`'s `chunksize` is accepted for compatibility and not
needed: tiny jobs are batched whatever it says.

`shutdown` keeps the standard library's promises (`concurrent/futures/process.py` and `thread.py`): no new
job after it (`RuntimeError`), every pending one still runs to completion unless `cancel_futures=True`
cancels those that have not started, `wait=False` returns at once, and the workers are released when the
last job is done (by a thread of its own, `ppft-executor-release`). At interpreter exit, as in the standard
library, the pending jobs of every executor are run to completion first (while a node can run them: with
none left, they fail with `DestroyedServerError` instead of hanging the exit); then its workers are
stopped, so none is left behind.
"""

from __future__ import annotations

import atexit
import concurrent.futures
import functools
import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from .job import Job
from .refs import Ref
from .server import Server

__all__ = ["Executor"]

log = logging.getLogger("ppft.client")

_live_executors: set[Executor] = set()  # until released: one with pending jobs is kept, as in the stdlib
_EXIT_POLL = 1.0  # seconds between two looks, at exit, at whether any node can still run the pending jobs


@atexit.register  # registered after server.py's own: runs before it, while the servers are still up
def _finish_at_exit() -> None:
    """As the standard library's executors do at exit: pending jobs run to completion, then workers stop."""
    for executor in list(_live_executors):
        executor._release_at_exit()


class Executor(concurrent.futures.Executor):
    """`max_workers` local worker processes (None: one per usable CPU), plus `ppservers` if given."""

    def __init__(
        self,
        max_workers: int | None = None,
        *,
        ppservers: tuple[Any, ...] = (),
        secret: str | bytes | None = None,
        restart: bool = False,
        proto: int | None = None,
        seal: bool = True,
        live_output: bool = False,
        job_timeout: float | None = None,
        worker_memory_limit: int | str | None = None,
        max_jobs_per_worker: int | None = None,
        ssh: tuple[str, ...] = ("ssh",),
    ) -> None:
        """The keywords are `Server`'s (`job_timeout`: the seconds each job may run on a worker, after
        which it raises `JobTimeoutError`, and `future.terminate()` stops a running one;
        `worker_memory_limit`, `max_jobs_per_worker`: the workers' limits; `seal=False`:
        unsealed links to ppservers on this machine that allow it; `live_output=True`: each line a job
        writes printed as it writes it, prefixed with the job and node; `ssh`: the command that reaches
        the `ssh://` entries of `ppservers`)."""
        if max_workers is not None and (not isinstance(max_workers, int) or isinstance(max_workers, bool)):
            raise TypeError(
                f"max_workers must be an int (local worker processes) or None (one per CPU), "
                f"not {type(max_workers).__name__} {max_workers!r}"
            )
        if max_workers is not None and max_workers < 0:
            raise ValueError(
                f"max_workers must be >= 0 (0: no local worker, every job runs on the ppservers) or None "
                f"(one per CPU), not {max_workers}"
            )
        ncpus: int | str = "autodetect" if max_workers is None else max_workers
        self._server = Server(
            ncpus, ppservers, secret, restart, proto, seal=seal, live_output=live_output,
            job_timeout=job_timeout, worker_memory_limit=worker_memory_limit,
            max_jobs_per_worker=max_jobs_per_worker, ssh=ssh,
        )  # fmt: skip
        self._shutdown_lock = threading.Lock()
        self._shutdown = False
        self._release_lock = threading.Lock()  # held while the server is waited for and destroyed
        self._releaser: threading.Thread | None = None
        _live_executors.add(self)

    @property
    def server(self) -> Server:
        """The `Server` underneath (for `print_stats`, `get_active_nodes`, ...)."""
        return self._server

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Job:
        if self._shutdown:  # one read: a submit racing shutdown fails either here or in the server
            raise RuntimeError("cannot schedule new futures after shutdown")
        if kwargs:
            fn = functools.partial(fn, **kwargs)
        return self._server.submit(fn, args)

    def put(self, obj: Any) -> Ref:
        """`Server.put`: `obj` shipped once to each node; pass the `Ref` to `submit` or `map` (in any
        argument, at any depth) and each job gets `obj`."""
        if self._shutdown:
            raise RuntimeError("cannot put objects after shutdown")
        return self._server.put(obj)

    def map(
        self,
        fn: Callable[..., Any],
        *iterables: Iterable[Any],
        timeout: float | None = None,
        chunksize: int = 1,
    ) -> Iterator[Any]:
        """As `concurrent.futures.Executor.map`: every call is submitted before this returns, results come
        in order, and closing the iterator early cancels what has not started. The function is captured
        once for all the calls, and the jobs are queued a frame's worth at a time."""
        if chunksize < 1:
            raise ValueError(f"chunksize must be >= 1, not {chunksize!r} (ppft batches the calls itself)")
        end_time = None if timeout is None else timeout + time.monotonic()
        if self._shutdown:
            raise RuntimeError("cannot schedule new futures after shutdown")
        jobs = self._server._submit_all(fn, zip(*iterables, strict=False))  # as map: the shortest ends it
        return _in_order(jobs, end_time)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """No job can be submitted after this (`RuntimeError`); each pending one still runs to completion,
        unless `cancel_futures` cancels those that have not started (a running one always finishes).
        `wait=True` returns once they are all done and the workers are stopped; `wait=False` returns at once,
        and the workers are stopped when the last job is done. Called again, it only waits (if `wait`)."""
        with self._shutdown_lock:
            first = not self._shutdown
            self._shutdown = True
            if cancel_futures:
                for job in list(self._server._scheduler.queue):  # one C-level copy: the I/O thread pops it
                    if job.cancel():  # type: ignore[attr-defined]  # False once it has started: it runs on
                        # waiters of concurrent.futures.wait and as_completed see it done now, as its docs
                        # say (the standard library's own executors leave them waiting)
                        job.set_running_or_notify_cancel()  # type: ignore[attr-defined]
            if first and not wait:
                releaser = threading.Thread(target=self._release, name="ppft-executor-release", daemon=True)
                self._releaser = releaser
                releaser.start()
        if wait:
            self._release()

    def _release(self) -> None:
        """Wait until every job is done, then stop the server's workers (once, whoever calls it first)."""
        with self._release_lock:
            if not self._server._exiting:
                self._server.wait()
                self._server.destroy()
            _live_executors.discard(self)

    def _release_at_exit(self) -> None:
        """`_release`, at interpreter exit: waits only while some node can run the pending jobs."""
        server = self._server
        while not server._exiting and not server._scheduler.wait(timeout=_EXIT_POLL):
            if not any(server.get_active_nodes().values()):
                log.warning(
                    "interpreter exit: %d job(s) of an Executor cannot run, as no node is left to run them; "
                    "they fail with DestroyedServerError",
                    server._scheduler.unfinished(),
                )
                break
        else:
            releaser = self._releaser  # done waiting as well: let it finish stopping the workers
            if releaser is not None:
                releaser.join(_EXIT_POLL * 10)
        server.destroy()  # nothing more if the releaser did it


def _in_order(jobs: list[Job], end_time: float | None) -> Iterator[Any]:
    """The results of `jobs` in order (what `Executor.map` returns). A job whose result raised (a
    timeout included) is cancelled with every job after it, as in `concurrent.futures`."""
    try:
        jobs.reverse()
        while jobs:
            job = jobs.pop()  # no reference kept to a job already handed out
            try:
                value = job.result() if end_time is None else job.result(end_time - time.monotonic())
            except BaseException:
                job.cancel()
                raise
            del job
            yield value
    finally:
        for job in jobs:
            job.cancel()
