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
    ) -> None:
        if max_workers is not None and max_workers < 0:
            raise ValueError("max_workers must be >= 0")
        ncpus: int | str = "autodetect" if max_workers is None else max_workers
        self._server = Server(ncpus, ppservers, secret, restart, proto)
        self._shutdown_lock = threading.Lock()
        self._shutdown = False

    @property
    def server(self) -> Server:
        """The `Server` underneath (for `print_stats`, `get_active_nodes`, ...)."""
        return self._server

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Job:
        with self._shutdown_lock:
            if self._shutdown:
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
        if chunksize < 1:
            raise ValueError("chunksize must be >= 1.")
        return super().map(fn, *iterables, timeout=timeout)

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
