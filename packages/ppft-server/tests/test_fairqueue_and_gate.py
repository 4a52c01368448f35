"""The ppserver's queue and door, without processes: cancels through the queue keep its turn order sound,
parked lanes wait out of turn, and the handshake gate drops idle connections first, oldest first."""

from __future__ import annotations

from collections import deque
from typing import Any

import pytest

from ppft_server.fairqueue import FairQueue
from ppft_server.gate import HandshakeGate, LogBudget
from ppft_worker.runtime.loop import Loop


class T:
    """A task of client `who`, number `n`."""

    def __init__(self, who: str, n: int) -> None:
        self.who, self.n = who, n

    def __repr__(self) -> str:
        return f"{self.who}{self.n}"


def drain(queue: FairQueue) -> list[str]:
    out = []
    while queue:
        out.append(repr(queue.popleft()))
    return out


def test_cancelling_a_whole_lane_takes_it_out_of_turn() -> None:
    """Reproduced: an emptied lane kept its turn and the next popleft raised IndexError."""
    queue = FairQueue()
    a: deque[Any] = deque()
    b: deque[Any] = deque()
    queue.extend(a, [T("a", 1), T("a", 2)])
    queue.extend(b, [T("b", 1)])
    removed = queue.cancel(a, lambda t: t.who == "a")
    assert [repr(t) for t in removed] == ["a1", "a2"]
    assert queue[0].who == "b" and len(queue) == 1
    assert drain(queue) == ["b1"]


def test_cancel_reaches_requeued_tasks_and_keeps_the_rest_in_order() -> None:
    queue = FairQueue()
    a: deque[Any] = deque()
    queue.extend(a, [T("a", 1), T("a", 2), T("a", 3)])
    queue.requeue([T("a", 0), T("b", 0)])
    removed = queue.cancel(a, lambda t: t.who == "a" and t.n in (0, 2))
    assert sorted(map(repr, removed)) == ["a0", "a2"]
    assert drain(queue) == ["b0", "a1", "a3"]


def test_dropping_an_empty_lane_never_removes_another_empty_lane() -> None:
    """Lanes are compared by identity: two empty deques are equal."""
    queue = FairQueue()
    a: deque[Any] = deque()
    b: deque[Any] = deque()
    queue.extend(a, [T("a", 1)])
    queue.extend(b, [T("b", 1)])
    queue.cancel(b, lambda t: True)
    queue.drop(a)
    assert not queue
    queue.extend(b, [T("b", 2)])
    assert drain(queue) == ["b2"]


def test_a_parked_lane_waits_out_of_turn_and_keeps_its_tasks() -> None:
    queue = FairQueue()
    a: deque[Any] = deque()
    b: deque[Any] = deque()
    queue.extend(a, [T("a", 1), T("a", 2)])
    queue.extend(b, [T("b", 1), T("b", 2)])
    queue.park(a)
    queue.extend(a, [T("a", 3)])
    assert len(queue) == 5
    assert drain(queue) == ["b1", "b2"]
    queue.unpark(a)
    assert drain(queue) == ["a1", "a2", "a3"]


class Conn:
    """A connection in its handshake, as the gate sees it."""

    def __init__(self, gate: HandshakeGate, host: str, progress: int = 0, arrives: int = 0) -> None:
        self.gate, self.host, self._progress, self.arrives, self.dropped = (
            gate,
            host,
            progress,
            arrives,
            False,
        )

    def progress(self) -> int:
        return self._progress

    def poll(self) -> bool:
        self._progress = max(self._progress, self.arrives)  # its bytes were waiting in the socket
        return True

    def drop(self) -> None:
        self.dropped = True


@pytest.fixture
def gate() -> HandshakeGate:
    loop = Loop()
    yield HandshakeGate(4, 2, LogBudget(loop, lambda line: None, what="x"))  # type: ignore[misc]
    loop.close()


def test_over_the_cap_the_oldest_idle_connection_goes_first(gate: HandshakeGate) -> None:
    busy = Conn(gate, "h1", progress=2)
    idle_old, idle_new = Conn(gate, "h2"), Conn(gate, "h3")
    waiting = Conn(gate, "h4", arrives=1)  # sent its opening; not read yet
    for conn in (busy, waiting, idle_old, idle_new):
        gate.admit(conn)
    newest = Conn(gate, "h5")
    gate.admit(newest)
    assert [c.dropped for c in (busy, waiting, idle_old, idle_new, newest)] == [
        False,
        False,
        True,
        False,
        False,
    ]
    assert len(gate) == 4 and gate.dropped == 1


def test_the_per_address_cap_drops_only_that_addresss_connections(gate: HandshakeGate) -> None:
    other = Conn(gate, "elsewhere")
    gate.admit(other)
    mine = [Conn(gate, "flood") for _ in range(3)]
    for conn in mine:
        gate.admit(conn)
    assert [c.dropped for c in mine] == [True, False, False] and not other.dropped


def test_when_every_connection_progressed_the_oldest_goes(gate: HandshakeGate) -> None:
    conns = [Conn(gate, f"h{i}", progress=1) for i in range(5)]
    for conn in conns:
        gate.admit(conn)
    assert [c.dropped for c in conns] == [True, False, False, False, False]


def test_shed_drops_one_waiting_connection_and_says_when_there_is_none(gate: HandshakeGate) -> None:
    assert not gate.shed()
    a, b = Conn(gate, "h1", progress=1), Conn(gate, "h2")
    gate.admit(a)
    gate.admit(b)
    assert gate.shed() and b.dropped and not a.dropped and len(gate) == 1
