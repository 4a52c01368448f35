"""Function bodies: the one digest definition (what every receiver checks), and the ledger both ends of a
version-2 connection keep to agree, without a message, on which bodies the receiver forgets."""

from __future__ import annotations

import hashlib
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ppft_protocol import BodyLedger, FunctionBody, check_digest, function_digest
from ppft_protocol.bodies import BODY_BUDGET, BODY_OVERHEAD, body_cost


def body(name: str, source: str = "", pickled: bytes = b"", imports: tuple[str, ...] = ()) -> FunctionBody:
    sources = (source,) if source else ()
    return FunctionBody(function_digest(name, sources, imports, pickled), name, sources, imports, pickled)


def _spec_digest(name: str, sources: tuple[str, ...], imports: tuple[str, ...], pickled: bytes) -> bytes:
    """The digest as docs/protocol.md spells it, with hashlib and struct."""
    h = hashlib.sha256(b"ppft-function-body-v1\x00")
    data = name.encode("utf-8", "surrogatepass")
    h.update(struct.pack(">I", len(data)) + data)
    for items in (sources, imports):
        h.update(struct.pack(">I", len(items)))
        for item in items:
            data = item.encode("utf-8", "surrogatepass")
            h.update(struct.pack(">Q", len(data)) + data)
    h.update(struct.pack(">Q", len(pickled)) + pickled)
    return h.digest()


def test_digest_of_the_documented_example() -> None:
    """docs/protocol.md quotes this digest for `add` with the source below and no import."""
    source = "def add(a, b):\n    return a + b\n"
    digest = function_digest("add", (source,), (), b"")
    assert digest.hex() == "c955c68c9f0d8310e517b206c9b04320055087cc3913931d2ecd346e5c144bb1"
    assert digest == _spec_digest("add", (source,), (), b"")


@given(
    st.text(max_size=20),
    st.lists(st.text(max_size=40), max_size=3).map(tuple),
    st.lists(st.text(max_size=20), max_size=3).map(tuple),
    st.binary(max_size=40),
)
def test_digest_is_the_documented_encoding(name: str, sources: tuple[str, ...], imports: tuple[str, ...],
                                           pickled: bytes) -> None:  # fmt: skip
    assert function_digest(name, sources, imports, pickled) == _spec_digest(name, sources, imports, pickled)


@pytest.mark.parametrize(
    "a, b",
    [
        (("f", ("ab",), (), b""), ("f", ("a", "b"), (), b"")),  # item boundaries count
        (("f", ("x",), (), b""), ("f", (), ("x",), b"")),  # a source is not an import
        (("fx", (), (), b""), ("f", ("x",), (), b"")),
        (("f", (), (), b"p"), ("f", ("p",), (), b"")),
    ],
)
def test_digest_is_unambiguous(a: tuple, b: tuple) -> None:  # type: ignore[type-arg]
    assert function_digest(*a) != function_digest(*b)


def test_check_digest_accepts_a_genuine_body_and_names_a_forged_one() -> None:
    genuine = body("f", "def f():\n    return 1\n")
    assert check_digest(genuine) is None
    forged = FunctionBody(genuine.digest, "f", ("def f():\n    return 'evil'\n",))
    problem = check_digest(forged)
    assert problem is not None
    assert genuine.digest.hex()[:16] in problem
    assert "digest does not match its content" in problem


def test_check_digest_escapes_the_name_it_reports() -> None:
    forged = FunctionBody(bytes(32), "f\n2026-01-01 forged\x1b[31m", ())
    problem = check_digest(forged)
    assert problem is not None and "\n" not in problem and "\x1b" not in problem


def test_body_cost_is_the_overhead_plus_the_utf8_bytes() -> None:
    assert body_cost(body("f", "é" * 10, b"12345", ("math",))) == BODY_OVERHEAD + 1 + 20 + 5 + 4


# -- the ledger ---------------------------------------------------------------------------------------------


def test_ledger_without_a_budget_forgets_nothing() -> None:
    ledger = BodyLedger(None)
    for i in range(100):
        assert ledger.add(body(f"f{i}", "x" * 10_000)) == []
    assert len(ledger) == 100


def test_ledger_forgets_the_oldest_sent_beyond_the_budget() -> None:
    bodies = [body(f"f{i}", "x" * 1000) for i in range(10)]
    cost = body_cost(bodies[0])
    ledger = BodyLedger(3 * cost)
    assert [ledger.add(b) for b in bodies[:3]] == [[], [], []]
    assert ledger.add(bodies[3]) == [bodies[0].digest]
    assert bodies[0].digest not in ledger and bodies[3].digest in ledger
    assert ledger.total == 3 * cost


def test_ledger_keeps_the_newest_body_even_when_it_alone_is_over_budget() -> None:
    ledger = BodyLedger(BODY_OVERHEAD)
    small, big = body("s"), body("b", "x" * 5000)
    ledger.add(small)
    assert ledger.add(big) == [small.digest]
    assert big.digest in ledger


def test_ledger_resent_body_is_the_newest_again() -> None:
    bodies = [body(f"f{i}", "x" * 1000) for i in range(4)]
    ledger = BodyLedger(3 * body_cost(bodies[0]))
    for b in bodies[:3]:
        ledger.add(b)
    ledger.add(bodies[0])  # already there: moves to the end, nothing forgotten
    assert ledger.add(bodies[3]) == [bodies[1].digest]


@given(st.lists(st.integers(min_value=0, max_value=30), max_size=200), st.integers(1, 20))
def test_two_ledgers_fed_the_same_bodies_agree_and_stay_in_budget(picks: list[int], room: int) -> None:
    """What the sender believes the receiver holds is what the receiver holds (the rule is deterministic),
    and the receiver never holds more than the budget, but for a single body over it."""
    bodies = [body(f"f{i}", "y" * (i * 97)) for i in range(31)]
    budget = room * 2000 + BODY_OVERHEAD
    sender, receiver = BodyLedger(budget), BodyLedger(budget)
    held: set[bytes] = set()
    for i in picks:
        b = bodies[i]
        if b.digest not in sender:
            sender.add(b)
            held.add(b.digest)
            for old in receiver.add(b):
                held.discard(old)
        assert {d for d in held} == {b.digest for b in bodies if b.digest in sender}
        assert receiver.total <= budget or len(receiver) == 1


def test_default_budget_is_64_mib() -> None:
    assert BODY_BUDGET == 64 * 1024 * 1024
