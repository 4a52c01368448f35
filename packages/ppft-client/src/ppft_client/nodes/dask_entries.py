"""The `ppservers` entries that name a dask.distributed cluster, and reaching a scheduler's address.

`dask://HOST:PORT` (port 8786 when left out), `dask+tls://HOST:PORT`, a `distributed.Client` or a dask
cluster object (anything with a `scheduler_address`, as dask's own `Client` accepts) each become one
`DaskEntry`, named as the node shows in `get_stats()`: "dask://HOST:PORT". This module must not import
`distributed` (a `Server` without dask entries never pays for it) and does no I/O but `_probe`, which runs on
a dask node's own thread.
"""

from __future__ import annotations

import errno
import importlib.util
import re
import socket
import sys
from collections.abc import Iterable
from typing import Any, NamedTuple

from ppft_protocol import PPFTError

__all__ = ["DASK_PORT", "DaskEntry", "DaskUnavailableError", "probe", "split_dask_entries"]

DASK_PORT = 8786
"""The port of a `dask://HOST` entry without one: dask's scheduler default."""

CONNECT_TIMEOUT = 5.0
"""Seconds to reach a scheduler (and for a dask Client that lost its scheduler to find it again)."""
_ENTRY = re.compile(r"^dask(?:\+(?P<scheme>[a-z][a-z0-9]*))?://(?P<rest>.*)$", re.IGNORECASE)
_INSTALL_HINT = 'pip install "ppft[dask]"'


class DaskUnavailableError(PPFTError, ImportError):
    """A `ppservers` entry names a dask cluster, but dask.distributed is not installed here."""


class DaskEntry(NamedTuple):
    """One dask entry of `ppservers`: its node name, and what to reach it through."""

    name: str  # "dask://host:port": the key in get_stats() and get_active_nodes()
    target: Any  # a scheduler address ("tcp://host:port"), a Client (the user's), or a cluster object
    owns_client: bool  # Server opens (and closes) a Client of its own: for an address or a cluster


# -- ppservers entries -------------------------------------------------------------------------------------


def split_dask_entries(entries: Iterable[Any]) -> tuple[tuple[Any, ...], list[DaskEntry]]:
    """(the other entries, the dask ones) of `ppservers`.

    Raises `DaskUnavailableError` when there is a dask entry and dask.distributed is not installed, and
    `ValueError` naming an entry that cannot be read."""
    rest: list[Any] = []
    found: list[DaskEntry] = []
    for entry in entries:
        if isinstance(entry, str):
            match = _ENTRY.match(entry.strip())
            if match is None:
                rest.append(entry)
            else:
                found.append(_address_entry(entry, match))
        elif _is_client(entry):
            if getattr(entry, "_asynchronous", False):
                raise ValueError(
                    f"ppservers entry {entry!r} is an asynchronous dask Client, which ppft cannot drive from "
                    "its own thread; pass a synchronous Client, the cluster object, or 'dask://HOST:PORT'"
                )
            address = getattr(getattr(entry, "scheduler", None), "address", None)
            if not isinstance(address, str):
                raise ValueError(
                    f"ppservers entry {entry!r} is a dask Client with no scheduler (closed, or never "
                    "connected); pass a connected Client, the cluster object, or 'dask://HOST:PORT'"
                )
            found.append(DaskEntry(_node_name(address), entry, False))
        elif isinstance(getattr(entry, "scheduler_address", None), str):  # LocalCluster, SLURMCluster, ...
            found.append(DaskEntry(_node_name(entry.scheduler_address), entry, True))
        else:
            rest.append(entry)
    if found and importlib.util.find_spec("distributed") is None:
        raise DaskUnavailableError(
            f"ppservers entry {found[0].name!r} is a dask cluster, but dask.distributed is not installed "
            f"in this Python ({sys.executable}); install it with: {_INSTALL_HINT}"
        )
    return tuple(rest), found


def _address_entry(entry: str, match: re.Match[str]) -> DaskEntry:
    scheme = (match.group("scheme") or "tcp").lower()
    rest = match.group("rest").strip().rstrip("/")
    if rest.startswith("["):  # [IPv6] or [IPv6]:port
        close = rest.find("]")
        host, port_text = (rest[1:close], rest[close + 2 :]) if close > 0 else ("", "")
        if close > 0 and rest[close + 1 : close + 2] not in ("", ":"):
            host = ""
        shown = f"[{host}]"
    else:
        host, _, port_text = rest.partition(":")
        shown = host
    if not host or "/" in host or (port_text and not port_text.isdigit()):
        raise ValueError(
            f"ppservers entry {entry!r}: a dask entry is 'dask://HOST:PORT' (or 'dask+tls://HOST:PORT'), "
            "the address of a dask scheduler"
        )
    port = int(port_text) if port_text else DASK_PORT
    if not 0 < port < 65536:
        raise ValueError(f"ppservers entry {entry!r}: port {port} is not a number in 1-65535")
    address = f"{scheme}://{shown}:{port}"
    return DaskEntry(_node_name(address), address, True)


def _node_name(address: str) -> str:
    """The node's name for a scheduler address: tcp://h:p is dask://h:p, tls://h:p is dask+tls://h:p."""
    scheme, sep, rest = address.partition("://")
    if not sep:
        return f"dask://{address}"
    return f"dask://{rest}" if scheme == "tcp" else f"dask+{scheme}://{rest}"


def _is_client(obj: object) -> bool:
    distributed = sys.modules.get("distributed")
    client_type = getattr(distributed, "Client", None)
    return isinstance(client_type, type) and isinstance(obj, client_type)


_CONNECT_ERRORS = {
    errno.ECONNREFUSED: "connection refused (is a dask scheduler running there, on that port?)",
    errno.EHOSTUNREACH: "host unreachable",
    errno.ENETUNREACH: "network unreachable",
}


def probe(address: str) -> None:
    """Open and close a TCP connection to a tcp:// or tls:// scheduler address; raise `OSError` saying why
    it cannot be reached."""
    scheme, _, hostport = address.partition("://")
    if scheme not in ("tcp", "tls"):
        return
    host, _, port = hostport.rpartition(":")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=CONNECT_TIMEOUT).close()
    except socket.gaierror as exc:
        raise OSError(f"cannot resolve host {host!r} ({exc.strerror})") from exc
    except TimeoutError as exc:
        why = f"no answer within {CONNECT_TIMEOUT:.0f} s (host down, or a firewall drops it)"
        raise OSError(why) from exc
    except OSError as exc:
        raise OSError(_CONNECT_ERRORS.get(exc.errno or 0, exc.strerror or str(exc))) from exc
