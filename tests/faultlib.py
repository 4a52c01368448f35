"""Faults injected into the I/O thread's callbacks, for the tests that check that one failure stays with its
owner: the loop logs it once with its traceback, the connection, worker or node it belongs to is closed (its
jobs run elsewhere), and everything else goes on.

Imported by tests as `faultlib` (the root pyproject puts tests/ on the path). `inject` replaces a method of a
class (or a function of a module) with one that raises `InjectedFault` the first `times` times it is called
where `when(...)` holds, and behaves as before otherwise. Patch before the objects register their
callbacks: a loop keeps the bound methods it was given.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest

__all__ = ["Fault", "InjectedFault", "assert_logged_once", "inject"]


class InjectedFault(Exception):
    """The failure a test injected into a callback."""


@dataclass
class Fault:
    """How often the injected fault fired."""

    where: str
    raised: int = 0


def inject(
    monkeypatch: pytest.MonkeyPatch,
    owner: Any,
    name: str,
    *,
    times: int = 1,
    when: Callable[..., bool] | None = None,
) -> Fault:
    """Make `owner.name` raise `InjectedFault` on its first `times` calls for which `when(*args)` is true
    (`args` as the callable receives them: `self` first for a method)."""
    original = getattr(owner, name)
    fault = Fault(f"{getattr(owner, '__name__', owner)}.{name}")

    def faulty(*args: Any, **kwargs: Any) -> Any:
        if fault.raised < times and (when is None or when(*args, **kwargs)):
            fault.raised += 1
            raise InjectedFault(f"injected into {fault.where}")
        return original(*args, **kwargs)

    monkeypatch.setattr(owner, name, faulty)
    return fault


def assert_logged_once(caplog: pytest.LogCaptureFixture, fault: Fault) -> None:
    """The fault fired, and was logged exactly once with its traceback."""
    assert fault.raised >= 1, f"the fault in {fault.where} never fired: the test did not test anything"
    with_traceback = [
        record
        for record in caplog.records
        if record.exc_info
        and isinstance(record.exc_info[1], InjectedFault)
        and record.levelno >= logging.ERROR
    ]
    assert len(with_traceback) == 1, [r.getMessage() for r in with_traceback]
