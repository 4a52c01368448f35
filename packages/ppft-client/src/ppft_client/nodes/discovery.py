"""The client's half of auto-discovery, and the reading of ppft's `ppservers` entries.

`parse_ppservers` splits `Server(ppservers=...)` into servers to connect to directly (``host:port``,
``host``, ``[::1]:port``) and networks to discover servers on (``*``, ``*:port``, ``192.168.1.*``), as ppft
1.7's `Server.__init__` does: each ``*`` of a wildcard becomes 0 in the interface and 255 in the broadcast
address, and a bare ``*`` means every IPv4 network.

`Discovery` runs on the scheduler's I/O loop: a UDP socket on the discovery port (SO_REUSEADDR, and
SO_REUSEPORT where the system has it, so clients and a ppserver share one host) that broadcasts a `Query`
at start and every `QUERY_INTERVAL` seconds, and calls `on_found(address, tcp_port, candidate)` when a
ppserver's `Announce` arrives from an address it is not trying already (docs/protocol.md, "Discovery
datagrams").

A datagram proves nothing, and anyone can send one: an announcement only suggests an address to try. The
TCP handshake decides (the secret, the protocol versions: the versions an announcement claims are not
believed either). Nothing is refused or kept for good on a datagram's word: at most `MAX_CANDIDATES`
suggested addresses are tried at once, and `MAX_UNANSWERED` of them before they answer; the node made for
an address that never answers forgets it (`Candidate.forget`), and the address may be suggested again after
a cool-down (10 s, doubling to 5 minutes while it keeps failing), so a flood of forged announcements costs a
bounded number of connection attempts and no memory that grows.

A wildcard's interface (192.168.1.0) is a network address, not an address of this host, and on Linux a
socket bound to one unicast address hears no broadcast at all; so for a wildcard the socket is bound to all
interfaces, and only announcements from inside the wildcard's network are taken. It runs entirely on the
loop's thread and must never block: the socket is non-blocking and a failed send is retried next interval.
"""

from __future__ import annotations

import errno
import ipaddress
import logging
import time
from collections.abc import Callable
from typing import Any

from ppft_protocol import PROTOCOL_VERSIONS, PPFTError, printable
from ppft_protocol.discovery import Announce, Query, encode_datagram
from ppft_worker.runtime import BroadcastEndpoint, Loop, bind_broadcast_socket, host_problem

__all__ = [
    "ACCEPTED_FORMS",
    "ADDRESS_HINT",
    "MAX_CANDIDATES",
    "MAX_UNANSWERED",
    "QUERY_INTERVAL",
    "Discovery",
    "DiscoveryError",
    "check_host_names",
    "parse_ppservers",
]

QUERY_INTERVAL = 5.0
"""Seconds between two queries (servers also announce themselves unasked, every 2 s)."""
MAX_CANDIDATES = 64
"""Announced addresses tried at once, at most (connected ones included)."""
MAX_UNANSWERED = 16
"""Announced addresses being tried that have not completed a handshake yet, at most."""
COOL_DOWN = 10.0
"""Seconds before a forgotten address may be tried again (doubled each time it fails again, to 300 s)."""
_MAX_COOL_DOWN = 300.0
_MAX_REMEMBERED = 4096  # forgotten addresses remembered for their cool-down, at most


log = logging.getLogger("ppft.discovery")

Address = tuple[str, int]


class DiscoveryError(PPFTError):
    """The auto-discovery socket cannot be set up (for example its UDP port is taken without sharing)."""


ACCEPTED_FORMS = (
    "'host:port', 'host' (port 60000), '[IPv6]:port', a wildcard ('*', '*:port', '192.168.1.*'), "
    "'ssh://[user@]host[:port]' or 'dask://HOST:PORT'"
)
"""The forms a `ppservers` entry may take, as error messages name them."""


def parse_ppservers(
    entries: tuple[str, ...], default_port: int
) -> tuple[list[Address], list[tuple[Address, Address]]]:
    """(servers to connect to, [((interface, port), (broadcast, port)) to discover servers on]).

    A host without a port gets `default_port` (ppft 1.7 picked a random port there, which no ppserver
    listens on; the default port is what such an entry means). Raises `TypeError` for a non-string entry
    and `ValueError` naming the entry, what is wrong with it and the accepted forms, for one that cannot be
    read (`"host:port:1"`, `"host:"`, `"[::1"`, `"tcp://host:1"`, ...): this reads the entry's syntax only,
    not whether its host name could exist."""
    direct: list[Address] = []
    auto: list[tuple[Address, Address]] = []
    for entry in entries:
        if not isinstance(entry, str):
            raise TypeError(
                f"ppservers entries must be strings like 'host:port', not {type(entry).__name__} {entry!r}"
            )
        host, port = _split(entry, default_port)
        if "*" not in host:
            direct.append((host, port))
            continue
        if host == "*":
            host = "*.*.*.*"
        interface = host.replace("*", "0")
        broadcast = host.replace("*", "255")
        for address in (interface, broadcast):
            try:
                ipaddress.IPv4Address(address)
            except ValueError:
                raise ValueError(
                    f"ppservers entry {entry!r}: a wildcard entry is an IPv4 pattern such as '*', "
                    f"'192.168.1.*' or '192.168.1.*:60000'"
                ) from None
        auto.append(((interface, port), (broadcast, port)))
    return direct, auto


def _unreadable(entry: str, what: str) -> ValueError:
    return ValueError(f"ppservers entry {entry!r}: {what}; write {ACCEPTED_FORMS}")


def _is_ipv6(text: str) -> bool:
    try:
        ipaddress.IPv6Address(text)
    except ValueError:
        return False
    return True


def _split(entry: str, default_port: int) -> Address:
    text = entry.strip()
    if "://" in text:
        scheme = text.partition("://")[0]
        raise _unreadable(
            entry,
            f"a {scheme}:// address is not a ppserver's (only ssh:// and dask:// entries take a scheme)",
        )
    if text.startswith("["):  # [IPv6]:port or [IPv6]
        close = text.find("]")
        if close < 0:
            raise _unreadable(entry, "missing ']' after the IPv6 address")
        host, rest = text[1:close], text[close + 1 :]
        if rest and not rest.startswith(":"):
            raise _unreadable(entry, f"expected ':port' after ']', not {rest!r}")
        if host and not _is_ipv6(host):
            raise _unreadable(entry, f"{host!r} in brackets is not an IPv6 address")
        port_text = rest[1:] if rest else None
    elif text.count(":") > 1:  # a bare IPv6 address, which has no port: "::1", "fe80::1"
        if not _is_ipv6(text):
            raise _unreadable(
                entry,
                "more than one ':' yet not an IPv6 address (an IPv6 address with a port is '[IPv6]:port')",
            )
        host, port_text = text, None
    elif ":" in text:
        host, port_text = text.split(":")
    else:
        host, port_text = text, None
    if not host:
        raise _unreadable(entry, "no host")
    if port_text is None:
        return host, default_port
    port = int(port_text) if port_text.isascii() and port_text.isdigit() else -1
    if not 0 < port <= 65535:
        raise _unreadable(entry, f"port {port_text!r} is not a number in 1-65535")
    return host, port


def _wildcard_network(interface: str, broadcast: str) -> ipaddress.IPv4Network | None:
    """The network a wildcard's (interface, broadcast) pair stands for (192.168.1.0/24), else None."""
    try:
        low = int(ipaddress.IPv4Address(interface))
        high = int(ipaddress.IPv4Address(broadcast))
    except ValueError:
        return None
    host_bits = low ^ high
    if host_bits == 0 or host_bits & (host_bits + 1) or low & host_bits or high & host_bits != host_bits:
        return None
    return ipaddress.IPv4Network((low, 32 - host_bits.bit_length()))


class _Candidate:
    """An announced address being tried: what its node reports back to the discovery."""

    __slots__ = ("_discovery", "address", "answered_once", "last_error")

    def __init__(self, discovery: Discovery, address: Address, last_error: str) -> None:
        self._discovery = discovery
        self.address = address
        self.last_error = last_error
        self.answered_once = False

    def answered(self) -> None:
        self.answered_once = True
        self._discovery._forgotten.pop(self.address, None)

    def forget(self, reason: str) -> None:
        self._discovery._forget(self, reason)


class Discovery(BroadcastEndpoint):
    """Finds ppservers announcing themselves on (broadcast, port); `on_found(address, tcp_port, candidate)`
    for each address worth trying (see the module's text)."""

    def __init__(
        self,
        loop: Loop,
        *,
        interface: str,
        broadcast: str,
        port: int,
        on_found: Callable[[str, int, _Candidate], None],
    ) -> None:
        super().__init__(loop, interface=interface, broadcast=broadcast, port=port)
        self.on_found = on_found
        self.network = _wildcard_network(interface, broadcast)
        self.found: dict[Address, _Candidate] = {}  # addresses being tried
        # forgotten addresses: (may be tried again at, cool-down, last reason)
        self._forgotten: dict[Address, tuple[float, float, str]] = {}
        self._full_logged = 0.0
        self._query = encode_datagram(Query())

    def start(self) -> None:
        """Bind the UDP socket and query now and every `QUERY_INTERVAL` seconds; `DiscoveryError` if it
        cannot be bound."""
        bind_to = "" if self.network is not None else self.interface
        try:
            try:
                sock = bind_broadcast_socket(bind_to, self.port)
            except OSError as exc:
                if exc.errno != errno.EADDRNOTAVAIL or not bind_to:
                    raise
                log.debug("auto-discovery: %s is not an address of this host: listening on all", bind_to)
                sock = bind_broadcast_socket("", self.port)
        except OSError as exc:
            raise DiscoveryError(
                f"cannot bind the auto-discovery UDP socket to {bind_to or '0.0.0.0'}:{self.port}: "
                f"{exc.strerror or exc}; free that UDP port, or list the ppservers explicitly (host:port)"
            ) from None
        log.debug("auto-discovery: querying %s:%d every %.0f s", self.broadcast, self.port, QUERY_INTERVAL)
        self._listen(sock)

    def _interval(self) -> float:
        return QUERY_INTERVAL

    def _send(self) -> None:
        self.query()

    def query(self) -> None:
        """Broadcast one `Query` now."""
        self._broadcast(self._query, "servers announcing themselves are still found")

    def _readable(self) -> None:
        for datagram, sender in self._received():
            if isinstance(datagram, Announce):
                self._announced(sender[0], datagram)

    def _announced(self, host: str, announce: Announce) -> None:
        key = (host, announce.tcp_port)
        if key in self.found:
            return
        now = time.monotonic()
        forgotten = self._forgotten.get(key)
        if forgotten is not None and now < forgotten[0]:
            return  # tried lately and it did not answer: not again before its cool-down ends
        if self.network is not None and ipaddress.IPv4Address(host) not in self.network:
            log.debug("auto-discovery: %s:%d is outside %s: ignored", host, announce.tcp_port, self.network)
            return
        unanswered = sum(1 for candidate in self.found.values() if not candidate.answered_once)
        if len(self.found) >= MAX_CANDIDATES or unanswered >= MAX_UNANSWERED:
            if now - self._full_logged >= QUERY_INTERVAL:
                self._full_logged = now
                log.info(
                    "auto-discovery: %d announced address(es) being tried already (%d not answering yet): "
                    "%s:%d waits for its next announcement",
                    len(self.found), unanswered, host, announce.tcp_port,
                )  # fmt: skip
            return
        name = printable(announce.name, 64)
        low, high = PROTOCOL_VERSIONS
        if announce.max_version < low or announce.min_version > high:
            log.info(
                "auto-discovery: %s:%d (%s) announces protocol versions %d-%d, this client speaks %d-%d: "
                "trying it anyway, the handshake decides",
                host, announce.tcp_port, name, announce.min_version, announce.max_version, low, high,
            )  # fmt: skip
        else:
            log.info("auto-discovery: found ppserver %s:%d (%s)", host, announce.tcp_port, name)
        candidate = _Candidate(self, key, forgotten[2] if forgotten is not None else "")
        self.found[key] = candidate
        self.on_found(host, announce.tcp_port, candidate)

    def _forget(self, candidate: _Candidate, reason: str) -> None:
        """The node of `candidate` gave it up: the address may be suggested again after its cool-down."""
        key = candidate.address
        if self.found.get(key) is candidate:
            del self.found[key]
        previous = self._forgotten.pop(key, None)
        cool_down = COOL_DOWN if previous is None else min(_MAX_COOL_DOWN, previous[1] * 2)
        if candidate.answered_once:
            cool_down = 0.0  # it was a ppserver: its next announcement is welcome at once
        while len(self._forgotten) >= _MAX_REMEMBERED:
            del self._forgotten[next(iter(self._forgotten))]  # the oldest
        self._forgotten[key] = (time.monotonic() + cool_down, cool_down or COOL_DOWN / 2, reason)
        log.debug("auto-discovery: %s:%d forgotten for %.0f s: %s", *key, cool_down, reason)


ADDRESS_HINT = "write a name such as 'node1.example.org' or an address such as '192.168.1.10' or '[::1]'"


def check_host_names(entries: tuple[Any, ...], default_port: int) -> None:
    """`ValueError` naming the first `ppservers` entry whose host no resolver can ever answer for (`a..b`,
    `1.2.3.4.5`, a space in it): such an entry is an error where it is written, not a failure later."""
    for entry in entries:
        for host, _ in parse_ppservers((entry,), default_port)[0]:
            problem = host_problem(host)
            if problem:
                raise ValueError(f"ppservers entry {entry!r}: {problem}; {ADDRESS_HINT}")
