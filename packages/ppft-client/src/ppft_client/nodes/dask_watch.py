"""The watcher thread of a dask node (`ppft-dask NAME`): opens the `Client`, follows the cluster, sees loss.

Everything that may wait on dask happens here, never on the I/O thread: `distributed` is imported here (only
where a dask node is used), the `Client` is opened here (a refused or unroutable address named at once by
`probe`, not after dask's own timeout), and every second the Client's state and the cluster's worker
threads are read here. What it finds goes to the node through `on_running(client, threads, adaptive)` and
`on_down(reason, final)`, which post to the I/O thread; a failure to connect is retried with backoff. It
closes only a Client it opened itself: a `Client` or cluster the user passed stays open.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

from ppft_protocol import PPFTError, printable

from .dask_entries import CONNECT_TIMEOUT, DaskEntry, probe

__all__ = ["ClusterWatch", "describe", "lost_connection"]

log = logging.getLogger("ppft.dask")

_POLL_INTERVAL = 1.0  # how often the watcher reads the cluster's thread count and the Client's state
_CLOSE_TIMEOUT = 5.0
_MAX_BACKOFF = 10.0


class ClusterWatch:
    """One dask node's watcher thread (see the module)."""

    def __init__(
        self,
        entry: DaskEntry,
        on_running: Callable[[Any, int, bool], None],
        on_down: Callable[[str, bool], None],
        is_up: Callable[[], bool],
    ) -> None:
        self.entry = entry
        self._on_running = on_running
        self._on_down = on_down
        self._is_up = is_up  # the node's own view: a loss it saw makes the next poll report again
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name=f"ppft-dask {entry.name}", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self, *, wait: bool) -> None:
        """Stop watching; `wait`: until the thread has closed the Client it opened (bounded)."""
        self._stop.set()
        if wait and self._thread.is_alive():
            self._thread.join(_CLOSE_TIMEOUT)  # its Client is closed before destroy() returns

    def is_alive(self) -> bool:
        return self._thread.is_alive()

    def _watch(self) -> None:
        """Open the Client, then follow the cluster's size and the Client's state until the node closes."""
        client: Any = None
        backoff = 0.5
        posted: tuple[Any, ...] = ()
        while not self._stop.is_set():
            if client is None:
                try:
                    client = self._open()
                except Exception as exc:  # noqa: BLE001 - any failure to connect is reported, then retried
                    self._on_down(describe(exc), False)
                    posted = ()
                    self._stop.wait(backoff)
                    backoff = min(_MAX_BACKOFF, backoff * 2)
                    continue
            state = self._poll(client)
            if state[0] == "closed":
                final = not self.entry.owns_client  # the user's Client: gone for good
                if final:
                    reason = "the dask Client given in ppservers was closed; this node takes no more jobs"
                else:
                    reason = "the dask scheduler went away and could not be reached again"
                self._on_down(reason, final)
                if final:
                    return
                self._close_client(client)
                client = None
                posted = ()
                continue
            if state != posted or (state[0] == "running" and not self._is_up()):  # the I/O thread saw a loss
                posted = state
                if state[0] == "running":
                    backoff = 0.5
                    self._on_running(client, state[1], state[2])
                else:
                    self._on_down(state[1], False)
            self._stop.wait(_POLL_INTERVAL)
        if client is not None and self.entry.owns_client:
            self._close_client(client)

    def _open(self) -> Any:
        import distributed  # noqa: PLC0415 - only where a dask node is used, off the caller's thread

        target = self.entry.target
        if not self.entry.owns_client:
            return target
        if isinstance(target, str):
            probe(target)  # a refused or unroutable address is named at once, not after dask's timeout
        client_type: Any = distributed.Client
        client = client_type(target, timeout=CONNECT_TIMEOUT, set_as_default=False)
        if self._stop.is_set():  # closed while connecting
            self._close_client(client)
            raise PPFTError("the node was closed while its Client connected")
        return client

    def _poll(self, client: Any) -> tuple[Any, ...]:
        """("running", threads, adaptive), ("down", reason) or ("closed",)."""
        status = str(client.status)
        if status in ("closed", "closing"):
            return ("closed",)
        if status != "running":
            return ("down", lost_connection(status))
        try:
            threads = sum(client.nthreads(callback_timeout=CONNECT_TIMEOUT).values())
        except Exception as exc:  # noqa: BLE001 - the scheduler did not answer: the node is down for now
            return ("down", f"the dask scheduler does not answer ({describe(exc)})")
        cluster = getattr(client, "cluster", None)
        adaptive = getattr(cluster, "_adaptive", None)  # how dask itself tells an adaptive cluster
        return ("running", int(threads), bool(adaptive is not None and adaptive.periodic_callback))

    def _close_client(self, client: Any) -> None:
        try:
            client.close(timeout=_CLOSE_TIMEOUT)
        except Exception as exc:  # noqa: BLE001 - closing at exit may meet dask half torn down
            log.debug(
                "closing the dask Client of %s: %s: %s",
                self.entry.name,
                type(exc).__name__,
                printable(exc, 1000),
            )


def lost_connection(status: str) -> str:
    """Why a node whose Client is no longer running is down."""
    return f"the connection to the dask scheduler was lost (the Client is {status})"


def describe(exc: BaseException) -> str:
    """ "Type: message" of an exception, whatever its `__str__` does."""
    try:
        text = str(exc)
    except Exception as str_exc:  # noqa: BLE001 - a broken __str__ must not hide the failure itself
        text = f"<str() failed: {str_exc!r}>"
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
