"""Function bodies: their digest (what a `FunctionBody` is named by), and how many a receiver keeps.

* `function_digest` is the one definition of a function body's digest (docs/protocol.md, "FunctionBody"):
  SHA-256 over an unambiguous encoding of the name, the sources, the imports and the pickled part, every
  field and item length-prefixed. The client computes it when it captures a function; every receiver (a
  worker, a ppserver, a dial-in worker) checks it with `check_digest` before it keeps or forwards a body,
  so a body cannot pose as another function's: a worker that caches bodies by digest, shared by many
  clients through a ppserver, never runs one client's code for another client's job.
* `BodyLedger` is the rule, shared by both ends of a version-2 connection, of which bodies the receiver
  keeps: every body costs its size plus `BODY_OVERHEAD`, and once the bodies sent on one connection cost
  more than `BODY_BUDGET`, the oldest sent are forgotten (the newest is always kept). The sender keeps the
  same ledger and sends a forgotten body again before the next job that uses it, so memory stays bounded
  on the receiver without a message or a round trip. On a version-1 connection nothing is forgotten (as
  ppft 2.0 did).

This module never does I/O and never unpickles: a body's pickled part is hashed as bytes.
"""

from __future__ import annotations

import struct
from collections import OrderedDict

from .messages import FunctionBody

TYPE_CHECKING = False
if TYPE_CHECKING:
    from hashlib import sha256 as _sha256
else:
    from .channel import _sha256  # the interpreter's own SHA-256: hashlib would load OpenSSL in a worker

__all__ = [
    "BODY_BUDGET",
    "BODY_OVERHEAD",
    "DIGEST_TAG",
    "BodyLedger",
    "body_cost",
    "check_digest",
    "function_digest",
]

DIGEST_TAG = b"ppft-function-body-v1\x00"
"""The first bytes hashed into every function digest."""

BODY_OVERHEAD = 4096
"""What a kept body costs beyond its bytes (the namespace a worker builds from it, its bookkeeping)."""

BODY_BUDGET = 64 * 1024 * 1024
"""The cost of the bodies a receiver keeps per version-2 connection, at least (64 MiB: 16,384 small ones)."""

_U32 = struct.Struct(">I")
_U64 = struct.Struct(">Q")


def function_digest(name: str, sources: tuple[str, ...], imports: tuple[str, ...], pickled: bytes) -> bytes:
    """The 32-byte digest of the function body with these fields (docs/protocol.md, "FunctionBody")."""
    return _digest_and_size(name, sources, imports, pickled)[0]


def body_cost(body: FunctionBody) -> int:
    """What keeping `body` costs against `BODY_BUDGET`: `BODY_OVERHEAD` plus the UTF-8 bytes of its name,
    sources and imports and the bytes of its pickled part."""
    size = len(body.name.encode("utf-8", "surrogatepass")) + len(body.pickled)
    for item in (*body.sources, *body.imports):
        size += len(item.encode("utf-8", "surrogatepass"))
    return BODY_OVERHEAD + size


def check_digest(body: FunctionBody) -> str | None:
    """None when `body.digest` is the digest of its content; else why the body must be refused."""
    digest, _ = _digest_and_size(body.name, body.sources, body.imports, body.pickled)
    if digest == body.digest:
        return None
    return (
        f"function body {body.digest.hex()[:16]} ({_short(body.name)}) was refused: its digest does not "
        f"match its content (which hashes to {digest.hex()[:16]}), so it may pose as another function; "
        f"the sender is broken or hostile, and no job of it runs here"
    )


def _short(name: str) -> str:
    from .text import printable  # noqa: PLC0415 - only a refusal pays for it

    return printable(name, 80)


def _digest_and_size(
    name: str, sources: tuple[str, ...], imports: tuple[str, ...], pickled: bytes | memoryview
) -> tuple[bytes, int]:
    h = _sha256(DIGEST_TAG)
    data = name.encode("utf-8", "surrogatepass")
    size = len(data) + len(pickled)
    h.update(_U32.pack(len(data)))
    h.update(data)
    for items in (sources, imports):
        h.update(_U32.pack(len(items)))
        for item in items:
            data = item.encode("utf-8", "surrogatepass")
            size += len(data)
            h.update(_U64.pack(len(data)))
            h.update(data)
    h.update(_U64.pack(len(pickled)))
    h.update(pickled)
    return h.digest(), BODY_OVERHEAD + size


class BodyLedger:
    """The bodies one end believes the receiving end of a connection keeps, oldest sent first.

    Both ends of a version-2 connection keep one: the sender records each body as it sends it, the
    receiver as it receives it; both forget the same ones, in the same order, so the sender knows which
    bodies to send again. `add` returns the digests forgotten to make room. `budget=None` forgets nothing
    (a version-1 connection)."""

    __slots__ = ("_costs", "budget", "total")

    def __init__(self, budget: int | None = BODY_BUDGET) -> None:
        self._costs: OrderedDict[bytes, int] = OrderedDict()
        self.budget = budget
        self.total = 0

    def __contains__(self, digest: object) -> bool:
        return digest in self._costs

    def __len__(self) -> int:
        return len(self._costs)

    def add(self, body: FunctionBody, cost: int | None = None) -> list[bytes]:
        """Record `body` as the newest; the digests of the oldest bodies forgotten to stay in budget."""
        costs = self._costs
        digest = body.digest
        if digest in costs:
            costs.move_to_end(digest)
            return []
        if cost is None:
            cost = body_cost(body)
        costs[digest] = cost
        self.total += cost
        budget = self.budget
        if budget is None or self.total <= budget:
            return []
        forgotten = []
        while self.total > budget and len(costs) > 1:
            old, old_cost = costs.popitem(last=False)
            self.total -= old_cost
            forgotten.append(old)
        return forgotten

    def discard(self, digest: bytes) -> None:
        """Forget `digest` now (a body the receiver refused, say)."""
        cost = self._costs.pop(digest, None)
        if cost is not None:
            self.total -= cost
