"""The kinds of node a scheduler sends jobs to, besides the local pool, and how they are found.

* `node`: `Node`, what the scheduler needs of anything that runs jobs for it: a new kind of node is a new
  module here, never a change to the scheduler;
* `remote`: `RemoteNode`, a ppserver (connected without blocking the I/O thread, authenticated, reconnected);
* `dask`, `dask_watch` and `dask_entries`: `DaskNode`, an existing dask.distributed cluster
  (`dask://HOST:PORT`), and the thread that watches it;
* `discovery`: the `ppservers` entries, and the auto-discovery of ppservers on a network (`*`).

Every node runs on the scheduler's I/O thread (`ppft_worker.runtime.Loop`) and never blocks it. This room
imports nothing of the client but `errors` and `version`; the scheduler and `Server` import it. The dask
node's module (asyncio, and dask itself on its own thread) is loaded only when a dask node is made.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .dask_entries import DaskEntry, DaskUnavailableError, split_dask_entries
from .discovery import ADDRESS_HINT, Discovery, DiscoveryError, check_host_names, parse_ppservers
from .node import Node, close_nodes
from .remote import Candidate, RemoteNode

if TYPE_CHECKING:
    from .dask import DaskNode

__all__ = [
    "ADDRESS_HINT",
    "Candidate",
    "DaskEntry",
    "DaskNode",
    "DaskUnavailableError",
    "Discovery",
    "DiscoveryError",
    "Node",
    "RemoteNode",
    "add_dask_nodes",
    "check_host_names",
    "close_nodes",
    "parse_ppservers",
    "split_dask_entries",
]


def add_dask_nodes(scheduler: Any, entries: list[DaskEntry]) -> None:
    """Add a `DaskNode` per dask entry to `scheduler` (`dask.add_dask_nodes`): the dask node's module, with
    asyncio and the machinery of the dask client, is loaded only here, when a `Server` is given a dask
    entry."""
    from .dask import add_dask_nodes as add  # noqa: PLC0415 - see above

    add(scheduler, entries)


def __getattr__(name: str) -> object:
    if name == "DaskNode":  # the class itself, for a caller that names it: loaded on first use as well
        from .dask import DaskNode  # noqa: PLC0415 - see add_dask_nodes

        return DaskNode
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
