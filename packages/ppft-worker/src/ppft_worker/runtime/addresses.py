"""What kind of network address a peer has, and whether a host name can be one at all.

An unsealed channel is offered (client) and granted (ppserver) only between two ends on one machine. Both
sides decide from the address the kernel connected or accepted, never from a name, which a resolver could
map anywhere (`is_loopback`). `host_problem` tells a name that no resolver can ever answer for (`a..b`, a
label of 64 characters, a space) from one that may resolve, so that a bad address is refused where it is
written (`Server(ppservers=...)`) rather than failing later, far from it. This module must never resolve
names.
"""

from __future__ import annotations

import ipaddress
import re

__all__ = ["host_problem", "is_loopback"]

_LABEL = re.compile(rb"[A-Za-z0-9_-]+")


def host_problem(host: str) -> str:
    """Why `host` can never be a host to connect to ("" if it is a numeric address, or a name that may
    resolve): the rules of DNS names (RFC 1035: labels of 1-63 characters, 253 in all), after IDNA encoding
    as the resolver does it (so `bücher.example` is fine)."""
    if not isinstance(host, str):
        return f"{host!r} is not a host name (a string)"
    try:
        ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        pass
    else:
        return ""
    if ":" in host:
        return f"{host!r} is not a valid IPv6 address"
    name = host[:-1] if host.endswith(".") else host  # a trailing dot: the name is fully qualified
    if not name:
        return "the host name is empty"
    labels = name.split(".")
    if any(not label for label in labels):
        return f"{host!r} is not a valid host name (an empty label: two dots in a row, or a leading dot)"
    if labels[-1].isdigit():  # no top-level domain is all digits: this was meant as an IPv4 address
        return f"{host!r} is neither an IPv4 address nor a host name (whose last label is never all digits)"
    if any(len(label) > 63 for label in labels if label.isascii()):
        return f"{host!r} is not a valid host name (a label longer than 63 characters)"
    try:
        encoded = name.encode("idna")
    except UnicodeError as exc:
        return f"{host!r} is not a valid host name ({exc})"
    if len(encoded) > 253:
        return f"{host!r} is not a valid host name (longer than 253 characters)"
    for label in encoded.split(b"."):
        if len(label) > 63:
            return f"{host!r} is not a valid host name (a label longer than 63 characters)"
        if not _LABEL.fullmatch(label):
            text = label.decode("ascii", "replace")
            return f"{host!r} is not a valid host name ({text!r} has characters no host name has)"
    return ""


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
