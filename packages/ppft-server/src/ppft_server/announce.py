"""`Announcer`: ppserver's half of auto-discovery (`ppserver -a`), on the server's own I/O loop.

As ppft 1.7 does, the announcer binds a UDP socket to (interface, port), the port being the server's TCP
port unless told otherwise, and broadcasts to (broadcast, port): every `ANNOUNCE_INTERVAL` seconds, and at
once when a client's `Query` arrives, it sends an `Announce` naming its TCP port, its name and the protocol
versions it speaks (docs/protocol.md, "Discovery datagrams"). Clients bind the same UDP port (every socket
on it sets SO_REUSEADDR, and SO_REUSEPORT where the system has it, so a client and a server share one host),
hear the broadcasts and connect over TCP, where the secret is checked: a datagram proves nothing.

On Linux a socket bound to one unicast address does not receive broadcasts: with `-i 127.0.0.1` the
announcer still announces every interval, but hears no queries. Bound to all interfaces (the default
0.0.0.0) it answers queries at once.

It runs entirely on the loop's thread (create, `start()` and `close()` it there) and must never block:
the socket is non-blocking, a failed send is logged (once per kind of failure) and retried at the next tick.
"""

from __future__ import annotations

import logging

from ppft_protocol import PROTOCOL_VERSIONS, PPFTError
from ppft_protocol.discovery import (
    MAX_NAME_BYTES,
    Announce,
    Query,
    encode_datagram,
)
from ppft_worker.runtime import BroadcastEndpoint, Loop, bind_broadcast_socket

__all__ = ["ANNOUNCE_INTERVAL", "AnnounceError", "Announcer"]

ANNOUNCE_INTERVAL = 2.0
"""Seconds between two unsolicited announcements."""

log = logging.getLogger("ppft.announce")


class AnnounceError(PPFTError):
    """The auto-discovery socket cannot be set up (for example the UDP port is taken without sharing)."""


class Announcer(BroadcastEndpoint):
    """Broadcasts this ppserver's `Announce` on (broadcast, port) and answers clients' queries at once."""

    def __init__(
        self, loop: Loop, *, interface: str, broadcast: str, port: int, tcp_port: int, name: str
    ) -> None:
        super().__init__(loop, interface=interface, broadcast=broadcast, port=port)
        self.tcp_port = tcp_port
        encoded = name.encode("utf-8", "replace")[:MAX_NAME_BYTES]
        self.name = encoded.decode("utf-8", "ignore")  # a name cut in a character loses that character
        self._datagram = encode_datagram(Announce(tcp_port, *PROTOCOL_VERSIONS, self.name))
        self.announcements = 0
        """Announcements sent so far (for tests and the debug log)."""

    def start(self) -> None:
        """Bind the UDP socket, announce now and every `ANNOUNCE_INTERVAL` seconds after."""
        try:
            sock = bind_broadcast_socket(self.interface, self.port)
        except OSError as exc:
            raise AnnounceError(
                f"cannot bind the auto-discovery UDP socket to {self.interface}:{self.port}: "
                f"{exc.strerror or exc}; free that UDP port or run without -a"
            ) from None
        log.debug(
            "auto-discovery: listening on UDP %s:%d, announcing TCP port %d to %s:%d every %.0f s",
            self.interface, self.port, self.tcp_port, self.broadcast, self.port, ANNOUNCE_INTERVAL,
        )  # fmt: skip
        self._listen(sock)

    def _interval(self) -> float:
        return ANNOUNCE_INTERVAL

    def _send(self) -> None:
        self.announce()

    def announce(self) -> None:
        """Send one `Announce` to (broadcast, port) now."""
        if self._broadcast(self._datagram, "check the broadcast address (-b) and the network"):
            self.announcements += 1

    def _readable(self) -> None:
        queried = False
        for datagram, sender in self._received():
            if isinstance(datagram, Query):
                log.debug("auto-discovery: query from %s:%d", sender[0], sender[1])
                queried = True
        if queried:  # a burst of queries gets one answer
            self.announce()
