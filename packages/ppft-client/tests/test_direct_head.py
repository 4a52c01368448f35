"""Which jobs a direct worker link takes (`ppft_client.nodes.direct`): only the head of the queue that may go
direct (no time limit, not a suspect), in order; the ppserver's link takes the head that may not."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Any

import pytest

from ppft_client.nodes.direct import Head, fits_direct, through_ppserver


@dataclass
class _Task:
    name: str
    timeout: float | None = None
    refs: tuple[Any, ...] = field(default_factory=tuple)
    solo: bool = False  # suspected of killing its worker: it runs alone, in the ppserver's pool


def _names(queue: Any) -> list[str]:
    return [queue[i].name for i in range(len(queue))]


def test_what_may_go_direct() -> None:
    assert fits_direct(_Task("plain"))  # type: ignore[arg-type]
    assert not fits_direct(_Task("limited", timeout=1.0))  # type: ignore[arg-type]
    assert fits_direct(_Task("ref", refs=(object(),)))  # type: ignore[arg-type]  # the ppserver passes refs on
    assert not fits_direct(_Task("suspect", solo=True))  # type: ignore[arg-type]


def test_a_head_ends_at_the_first_task_refused_and_takes_in_order() -> None:
    queue = deque([_Task("a"), _Task("b"), _Task("t", timeout=2.0), _Task("c")])
    head = Head(queue, fits_direct)  # type: ignore[arg-type]
    assert len(head) == 2 and _names(head) == ["a", "b"]
    with pytest.raises(IndexError):
        head[2]
    assert head.popleft().name == "a"
    assert head.popleft().name == "b"
    assert not head
    with pytest.raises(IndexError):
        head.popleft()
    assert [t.name for t in queue] == ["t", "c"]  # the rest waits, in order, for the ppserver's link
    through = Head(queue, through_ppserver)  # type: ignore[arg-type]
    assert _names(through) == ["t"]


def test_what_a_head_puts_back_is_at_the_front_again_and_counted() -> None:
    queue = deque([_Task("a"), _Task("b"), _Task("c")])
    head = Head(queue, fits_direct)  # type: ignore[arg-type]
    taken = [head.popleft(), head.popleft()]
    head.extendleft(reversed(taken))  # as `take_batch` puts a batch back after a failure
    assert len(head) == 3 and [t.name for t in queue] == ["a", "b", "c"]


def test_a_head_of_an_empty_queue_or_a_refused_first_task_is_empty() -> None:
    assert not Head(deque(), fits_direct)
    assert not Head(deque([_Task("t", timeout=1.0), _Task("a")]), fits_direct)  # type: ignore[arg-type]


def test_a_head_holds_at_most_what_it_is_told() -> None:
    queue = deque([_Task("a"), _Task("b"), _Task("c")])
    assert _names(Head(queue, fits_direct, 1)) == ["a"]  # type: ignore[arg-type]
