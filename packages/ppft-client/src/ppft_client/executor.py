"""`Executor`: a real `concurrent.futures.Executor` over ppft's machinery, local and remote.

    with ppft.Executor(4) as ex:
        squares = list(ex.map(pow, range(1000), [2] * 1000))

Jobs already travel in batches on the wire, so `map`'s `chunksize` is accepted for compatibility and not
needed: tiny jobs are batched whatever it says.
"""

from __future__ import annotations

import concurrent.futures
import functools
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from .job import Job
from .server import Server

__all__ = ["Executor"]


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
    ) -> None:
        """The keywords are `Server`'s (`seal=False`: unsealed links to ppservers on this machine that
        allow it)."""
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
        self._server = Server(ncpus, ppservers, secret, restart, proto, seal=seal)
        self._shutdown_lock = threading.Lock()
        self._shutdown = False

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
        with self._shutdown_lock:
            if self._shutdown:
                return
            self._shutdown = True
        if cancel_futures:
            for job in list(self._server._scheduler.queue):
                job.cancel()  # type: ignore[attr-defined]
        if wait:
            self._server.wait()
        self._server.destroy()


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
