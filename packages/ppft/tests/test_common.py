"""`ppft.common`: ppft 1.7's utilities, with ppft 1.7's behaviour."""

from __future__ import annotations

import threading

import pytest

from ppft import PPFTError
from ppft.common import (
    RangeExhaustedError,
    b_,
    get_class_hierarchy,
    is_not_imported,
    portnumber,
    randomport,
    start_thread,
    str_,
)


def test_str_decodes_ascii_bytes() -> None:
    assert str_(b"hello") == "hello"


def test_str_and_b_round_trip_non_ascii_bytes() -> None:
    raw = bytes([0, 200, 255, 65])
    text = str_(raw)
    assert text == "[0, 200, 255, 65]{B}"
    assert b_(text) == raw


def test_b_encodes_text_as_latin1() -> None:
    assert b_("caf\xe9") == b"caf\xe9"


def test_str_and_b_pass_other_objects_through() -> None:
    obj = object()
    assert str_(obj) is obj and b_(obj) is obj and str_("text") == "text" and b_(b"x") == b"x"


def test_b_never_evaluates_code() -> None:
    with pytest.raises(ValueError):
        b_("[__import__('os').system('true')]{B}")


def test_get_class_hierarchy_lists_bases_first_without_object() -> None:
    class A:
        pass

    class B(A):
        pass

    class C(B, int):
        pass

    assert get_class_hierarchy(C) == [A, B, int, C]
    assert get_class_hierarchy(object) == []


def test_is_not_imported_matches_module_and_submodules() -> None:
    assert is_not_imported(threading.Thread, ["threading"]) is False
    assert is_not_imported(get_class_hierarchy, ["ppft"]) is False  # ppft.common is inside ppft
    assert is_not_imported(get_class_hierarchy, ["ppf"]) is True


def test_portnumber_counts_up_from_a_random_start_and_wraps() -> None:
    pick = portnumber(min=10, max=12)
    first = pick()
    assert 10 <= first <= 12
    rest = [pick(), pick()]
    assert sorted([first, *rest]) == [10, 11, 12]


def test_portnumber_raises_when_the_range_is_exhausted() -> None:
    pick = portnumber(min=5, max=6)
    pick()
    pick()
    with pytest.raises(RangeExhaustedError, match="Range exhausted") as info:
        pick()
    assert isinstance(info.value, PPFTError) and isinstance(info.value, RuntimeError)


def test_randomport_is_in_range() -> None:
    assert all(2000 <= randomport(2000, 2010) <= 2010 for _ in range(50))


def test_start_thread_runs_the_target_in_a_daemon_thread() -> None:
    done = threading.Event()
    seen: list[object] = []

    def target(a: int, b: int = 0) -> None:
        seen.append((a, b, threading.current_thread().name))
        done.set()

    thread = start_thread("ppft-test", target, (1,), {"b": 2})
    assert done.wait(10)
    thread.join(10)
    assert thread.daemon and seen == [(1, 2, "ppft-test")]
