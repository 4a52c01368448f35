"""`BodyCache`: the function bodies a worker holds, each checked against its digest, within a budget.

A body whose digest does not match its content is refused (and logged): it never replaces the body of that
digest, and the jobs that need it learn why (`refusal`). On a version-2 link the bodies kept stay within
`ppft_protocol.bodies.BODY_BUDGET`, by the `BodyLedger` rule the sender follows too, so the sender knows
which bodies to send again. A body the rule forgets while queued jobs still need it stays until `release`
is told they are gone: a worker queues jobs by digest and resolves their bodies only when they run.

This module does no I/O and never builds a namespace; `JobRunner` (execute.py) does, and drops a namespace
with its body.
"""

from __future__ import annotations

from ppft_protocol import BodyLedger, FunctionBody, check_digest

TYPE_CHECKING = False
if TYPE_CHECKING:
    import logging

__all__ = ["BodyCache"]

_REFUSALS_KEPT = 256  # refused digests remembered, to name the mismatch in their jobs' errors


class BodyCache:
    """The bodies one worker was sent: `bodies` by digest, the refused ones' reasons, the budget's ledger."""

    __slots__ = ("_doomed", "_ledger", "_refused", "bodies")

    def __init__(self, budget: int | None = None) -> None:
        self.bodies: dict[bytes, FunctionBody] = {}
        self._ledger = BodyLedger(budget)
        self._doomed: set[bytes] = set()  # forgotten by the ledger, dropped once no queued job needs them
        self._refused: dict[bytes, str] = {}  # digest -> why its body was refused

    def add(self, body: FunctionBody) -> str | None:
        """Keep `body` (the budget may doom older ones); or refuse it and say why."""
        digest = body.digest
        problem = check_digest(body)
        if problem is not None:
            _log().warning("%s", problem)  # our sentence; the name in it is escaped
            if digest not in self.bodies:  # the genuine body of that digest, if held, stays
                refused = self._refused
                if len(refused) >= _REFUSALS_KEPT:
                    del refused[next(iter(refused))]
                refused[digest] = problem
            return problem
        self._refused.pop(digest, None)
        self.bodies[digest] = body
        self._doomed.discard(digest)
        forgotten = self._ledger.add(body)
        if forgotten:
            self._doomed.update(forgotten)
        return None

    def refusal(self, digest: bytes) -> str | None:
        """Why the body of `digest` was refused, if it was (and no genuine one came since)."""
        return self._refused.get(digest)

    @property
    def doomed(self) -> bool:
        """Whether bodies forgotten by the budget are still held, waiting for `release`."""
        return bool(self._doomed)

    def release(self, needed: set[bytes]) -> list[bytes]:
        """Drop the forgotten bodies that no job in `needed` refers to; their digests."""
        dropped = [d for d in self._doomed if d not in needed]
        for digest in dropped:
            self._doomed.discard(digest)
            self.bodies.pop(digest, None)
        return dropped


def _log() -> logging.Logger:
    import logging  # noqa: PLC0415 - a worker loads `logging` only when it has something to say

    return logging.getLogger("ppft.worker")
