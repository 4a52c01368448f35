"""A ppserver's `put()` refs: what clients' `Put` and `Release` do here, and the status figures of them.

Each client's refs go into the server's one `RefBook` (`ppft_worker.runtime.refs`), tagged with the client's
session; the book holds one copy of each pickle, within `--refs-memory` and the machine's available memory:
a `Put` beyond either is answered with `PutRefused` (the figures in its reason) rather than risking the OOM
killer, and the jobs that need that ref fail naming it. Every change goes at once to the local workers, the
dial-in workers and the direct workers (`RefBook.sync`); a client that leaves has its refs released. This
module does no I/O of its own beyond queueing messages on the server's streams and its direct workers' ref
pipes.
"""

from __future__ import annotations

import logging
from typing import Any, Protocol

from ppft_protocol import Put, PutRefused, printable
from ppft_worker.pool import WorkerPool
from ppft_worker.runtime import Link, RefBook, Stream

__all__ = ["RefHost", "put_ref", "ref_figures", "release_refs", "sync_refs"]

log = logging.getLogger("ppft.server")


class _Direct(Protocol):
    def sync_refs(self) -> None: ...


class RefHost(Protocol):
    """What these functions use of the ppserver (`NodeServer`)."""

    refs: RefBook
    pool: WorkerPool
    links: list[Link]

    @property
    def direct(self) -> _Direct: ...


class Client(Protocol):
    """What they use of a client's session."""

    peer: str
    stream: Stream


def put_ref(server: RefHost, session: Client, put: Put) -> None:
    """Hold a client's `Put`, or answer `PutRefused` with the reason (logged)."""
    reason = server.refs.put(put.ref_id, put.data, session)
    if reason is not None:
        log.warning("refused ref %#x of %s: %s", put.ref_id, session.peer, printable(reason, 300))
        session.stream.send(PutRefused(put.ref_id, reason))
    sync_refs(server)


def release_refs(server: RefHost, session: Client, ref_ids: tuple[int, ...]) -> None:
    """A client's `Release` (or its leaving, with every ref it put: `ref_ids` empty)."""
    if ref_ids:
        server.refs.release(ref_ids, session)
    else:
        server.refs.release_owner(session)
    sync_refs(server)


def sync_refs(server: RefHost) -> None:
    """Send the local workers, the dial-in workers and the direct workers what changed."""
    server.pool.sync_refs()
    for link in server.links:  # each given the book when its dial-in worker joined (`Session._joining`)
        link.sync_refs()
    server.direct.sync_refs()


def ref_figures(server: RefHost) -> dict[str, Any]:
    """`status.json`'s "refs": refs held, their bytes, the limit, and the puts refused since start."""
    book = server.refs
    return {"count": len(book.refs), "bytes": book.bytes, "limit": book.limit, "refused": book.refused_total}
