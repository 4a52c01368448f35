"""What kind of network address a peer has: the one rule both ends of an unsealed link apply.

An unsealed channel is offered (client) and granted (ppserver) only between two ends on one machine. Both
sides decide from the address the kernel connected or accepted, never from a name, which a resolver could
map anywhere. This module must never resolve names.
"""

from __future__ import annotations

import ipaddress

__all__ = ["is_loopback"]


def is_loopback(host: str) -> bool:
    """Whether the numeric address `host` is a loopback one: 127.0.0.0/8, ::1 or ::ffff:127.x (a scope
    suffix such as `%lo` is ignored). Anything that is not a numeric address is not loopback."""
    try:
        address = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped.is_loopback
    return address.is_loopback
