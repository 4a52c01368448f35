"""The kinds of node a scheduler sends jobs to, besides the local pool, and how they are found.

* `node`: `Node`, what the scheduler needs of anything that runs jobs for it: a new kind of node is a new
  module here, never a change to the scheduler;
* `remote`: `RemoteNode`, a ppserver (connected without blocking the I/O thread, authenticated, reconnected);
* `dask`, `dask_watch` and `dask_entries`: `DaskNode`, an existing dask.distributed cluster
  (`dask://HOST:PORT`), and the thread that watches it;
* `discovery`: the `ppservers` entries, and the auto-discovery of ppservers on a network (`*`).

Every node runs on the scheduler's I/O thread (`ppft_worker.runtime.Loop`) and never blocks it. This room
imports nothing of the client but `errors` and `version`; the scheduler and `Server` import it. Its names
are loaded on first use: `dask` (asyncio, and dask itself on its own thread) only when a dask node is made.
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from .dask import DaskNode, add_dask_nodes
    from .dask_entries import DaskEntry, DaskUnavailableError, split_dask_entries
    from .discovery import Discovery, DiscoveryError, parse_ppservers
    from .node import Node
    from .remote import Candidate, RemoteNode

__all__ = [
    "Candidate",
    "DaskEntry",
    "DaskNode",
    "DaskUnavailableError",
    "Discovery",
    "DiscoveryError",
    "Node",
    "RemoteNode",
    "add_dask_nodes",
    "parse_ppservers",
    "split_dask_entries",
]

_HOMES = {
    "DaskNode": "dask",
    "add_dask_nodes": "dask",
    "DaskEntry": "dask_entries",
    "DaskUnavailableError": "dask_entries",
    "split_dask_entries": "dask_entries",
    "Discovery": "discovery",
    "DiscoveryError": "discovery",
    "parse_ppservers": "discovery",
    "Node": "node",
    "Candidate": "remote",
    "RemoteNode": "remote",
}


def __getattr__(name: str) -> object:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(__import__(f"{__name__}.{home}", fromlist=[name]), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
