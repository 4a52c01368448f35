"""Live output on a ppserver: what its workers' jobs write, sent as they write it to the client owning them.

A client that asks (`WatchOutput`, protocol version 2) is a watcher. While there is one, the server's pool
reports what running jobs write (`WorkerPool.watch_output`), and so do its dial-in workers that speak
version 2 (asked with `WatchOutput` too; their `Link` hands the pieces on). Each piece goes to the client
that sent the job, under that client's job id, and only to it, only if it watches. Nothing else changes for
a client that does not watch: its jobs' output arrives in their results, as always.

Runs on the server's loop thread; it only sends messages (a watcher that reads nothing is the stream's
backpressure to deal with, as for its results).
"""

from __future__ import annotations

import logging

from ppft_protocol import LiveOutput, WatchOutput
from ppft_worker.pool import OutputPiece, WorkerPool
from ppft_worker.runtime import Link, Owner, ServedTask

__all__ = ["Watchers"]

log = logging.getLogger("ppft.server")


class Watchers:
    """The clients of one server that watch live output, and the plumbing that feeds them."""

    def __init__(self, pool: WorkerPool, links: list[Link]) -> None:
        self.pool = pool
        self.links = links  # the server's dial-in links (its own list, which it keeps up to date)
        self.owners: set[Owner] = set()

    def watch(self, owner: Owner, on: bool) -> None:
        """`owner` (a client's session) asked to watch, or to stop."""
        before = bool(self.owners)
        if on:
            self.owners.add(owner)
        else:
            self.owners.discard(owner)
        if bool(self.owners) != before:
            self._changed()

    def drop(self, owner: Owner) -> None:
        """`owner` is gone."""
        if owner in self.owners:
            self.watch(owner, False)

    def link_added(self, link: Link) -> None:
        """A dial-in joined: it reports live output too while someone watches."""
        if self.owners:
            self._watch_link(link, True)

    def pieces(self, pieces: list[OutputPiece]) -> None:
        """What running jobs wrote (from the pool or a dial-in link): to each watching owner, its own."""
        by_owner: dict[Owner, list[tuple[int, int, int, str]]] = {}
        for task, stream, offset, text in pieces:
            served: ServedTask = task  # type: ignore[assignment]  # the tasks this server queued
            owner = served.owner
            if owner in self.owners and not owner.closed:
                by_owner.setdefault(owner, []).append((served.client_id, stream, offset, text))
        for owner, entries in by_owner.items():
            owner.send(LiveOutput(tuple(entries)))

    def _changed(self) -> None:
        on = bool(self.owners)
        self.pool.watch_output(self.pieces if on else None)
        for link in self.links:
            self._watch_link(link, on)

    def _watch_link(self, link: Link, on: bool) -> None:
        stream = link.stream
        if stream.closed:
            return
        if stream.conn.version < 2:
            if on:
                log.info(
                    "%s speaks protocol version 1 (ppft 2.0.0): its jobs' output reaches their clients when "
                    "they end, not live",
                    link.name,
                )
            return
        link.on_output = self.pieces if on else None
        stream.send(WatchOutput(on))
