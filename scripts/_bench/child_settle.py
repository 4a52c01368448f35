"""What child.py's warm-up waits for besides workers: a ppft 2 client's direct worker links to its ppservers.

A client makes them in the background once connected (docs/cluster.md, "Direct worker links"), as a pool
starts its workers: the timed span measures the steady state, with them. It runs as a script beside child.py,
so `import child_settle` finds it.
"""

from __future__ import annotations

import time
from typing import Any


def settle(server: Any, timeout: float = 5.0) -> None:
    """Wait (`timeout` s at most) until every ppserver node of `server` (a `pp.Server`; anything else, or a
    ppft 1.7.8 one, which has no `status()`, is not waited for) is ready with a direct link per worker."""
    status = getattr(server, "status", None)
    end = time.monotonic() + timeout
    while status is not None and time.monotonic() < end and not _settled(status()["nodes"]):
        time.sleep(0.01)


def _settled(nodes: list[dict[str, Any]]) -> bool:
    ready = [
        n["state"] == "ready" and n["direct_links"] >= n["workers"] for n in nodes if n["kind"] == "ppserver"
    ]
    return all(ready)
