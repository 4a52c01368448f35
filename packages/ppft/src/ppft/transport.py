"""ppft 1.7's `ppft.transport`, retired: the names remain, the machinery is `ppft_protocol`'s.

ppft 1.7 moved pickles over pipes and sockets with these classes, authenticated by a SHA-1 challenge and not
encrypted. ppft 2 speaks the protocol of `ppft_protocol` (docs/protocol.md): length-prefixed frames, a mutual
HMAC-SHA256 handshake, ChaCha20-Poly1305 sealing, driven without I/O by `ppft_protocol.Connection` and moved
by `ppft_worker.runtime.stream.Stream` on one I/O loop. The two protocols do not interoperate: a ppft 1.x peer
is recognised and refused with a message saying so.
"""

from __future__ import annotations

from ._retired import RetiredInternal
from .common import copyright
from .version import __version__

__all__ = [
    "CPipeTransport",
    "CSocketTransport",
    "CTransport",
    "PipeTransport",
    "SocketTransport",
    "Transport",
    "__version__",
    "copyright",
    "version",
]

version = __version__

_REPLACED = (
    "ppft 2 speaks the framed, authenticated and sealed protocol of ppft_protocol (ppft_protocol.Connection, "
    "docs/protocol.md) instead; use ppft.Server to run jobs, which handles all communication"
)


class Transport(RetiredInternal):
    """ppft 1.7's abstract message transport. Replaced by `ppft_protocol.Connection` (sans-I/O)."""

    replacement = _REPLACED


class CTransport(Transport):
    """ppft 1.7's transport with an MD5 cache of function sources. Replaced by content-addressed
    `FunctionBody` messages (SHA-256 digests), sent once per peer."""

    replacement = _REPLACED


class PipeTransport(Transport):
    """ppft 1.7's transport over a worker's stdin/stdout. Replaced by `ppft_worker.runtime.stream.Stream` over
    private pipe descriptors (job code writing to fd 1 cannot corrupt the channel)."""

    replacement = _REPLACED


class SocketTransport(Transport):
    """ppft 1.7's transport over a TCP socket to a ppserver. Replaced by `ppft_worker.runtime.stream.Stream`
    over a socket, authenticated with HMAC-SHA256 and sealed with ChaCha20-Poly1305."""

    replacement = _REPLACED


class CPipeTransport(PipeTransport, CTransport):
    """ppft 1.7's cached pipe transport. Replaced as `PipeTransport` and `CTransport` are."""

    replacement = _REPLACED


class CSocketTransport(SocketTransport, CTransport):
    """ppft 1.7's cached socket transport. Replaced as `SocketTransport` and `CTransport` are."""

    replacement = _REPLACED
