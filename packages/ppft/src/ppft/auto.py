"""ppft 1.7's `ppft.auto` (auto-discovery of ppservers), retired: the names remain, the service is new.

Clients discover ppservers with `Server(ppservers=("*",))` (or `"*:port"`, `"192.168.1.*"`), which runs
`ppft_client.nodes.Discovery` on the client's I/O loop; ppserver answers and announces itself with `-a`
(`ppft_server.announce.Announcer`). The datagrams are versioned and specified in docs/protocol.md; ppft
1.7's one-letter "S"/"C" broadcasts are not understood.
"""

from __future__ import annotations

from ._retired import RetiredInternal
from .common import copyright
from .version import __version__

__all__ = ["BROADCAST_INTERVAL", "Discover", "__version__", "copyright", "version"]

version = __version__

BROADCAST_INTERVAL = 10
"""ppft 1.7's seconds between two broadcasts (ppserver 2 announces itself every 2 s, clients query
every 5)."""


class Discover(RetiredInternal):
    """ppft 1.7's auto-discovery service. Replaced by `ppft_client.nodes.Discovery` (client side) and
    `ppft_server.announce.Announcer` (ppserver -a)."""

    replacement = (
        "clients discover ppservers with ppft.Server(ppservers=('*',)) and ppserver announces itself with "
        "-a (ppft_client.nodes.Discovery and ppft_server.announce.Announcer)"
    )
