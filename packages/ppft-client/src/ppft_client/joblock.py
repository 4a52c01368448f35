"""`JOBS_LOCK` and `Sleepers`: the one lock that guards the state of every job, and the condition a job makes
of it when a thread waits for it.

A `concurrent.futures.Future` keeps a `threading.Condition` of its own: eight objects for the garbage
collector (the condition, its reentrant lock, five bound methods, a deque), made for every future, though
most jobs of a busy client are done before anyone waits for them. Jobs share `JOBS_LOCK` instead, which also
lets the I/O thread claim or finish a whole frame of jobs in one acquisition, and a job makes its
`Sleepers` only when a thread is about to wait. This module must never run user code, nor block while
holding the lock.
"""

from __future__ import annotations

import threading
from typing import Any

from ppft_protocol.cpython import reinit_after_fork, rlock_condition_hooks

__all__ = ["JOBS_LOCK", "Sleepers", "new_condition", "notify_all_later"]

JOBS_LOCK = threading.RLock()
"""Guards the state of every job. Reentrant, as a `Future`'s own is: `concurrent.futures.wait` acquires the
`_condition` of each future it is given, here the same lock many times over."""

reinit_after_fork(JOBS_LOCK)  # a child forked while another thread held it must not inherit it held

_LOCK = JOBS_LOCK
_allocate_lock = threading.Lock
_HOOKS = rlock_condition_hooks(JOBS_LOCK)  # what a condition needs of the lock, to wait on it
if _HOOKS is not None:
    _is_owned, _release_save, _acquire_restore = _HOOKS


def new_condition() -> Any:
    """A job's `_condition`: `Sleepers`, or a `threading.Condition` over `JOBS_LOCK` on a Python whose
    `RLock` lacks what `Sleepers` needs of it (`ppft_protocol.cpython.rlock_condition_hooks`)."""
    return Sleepers() if _HOOKS is not None else threading.Condition(_LOCK)


class Sleepers(list):  # type: ignore[type-arg]
    """One job's `_condition`: the shared `_LOCK`, and the locks of the threads asleep until the job changes.

    It is what `threading.Condition` would be over `_LOCK` (acquire, release, `with`, wait, notify), with
    the condition's wait list as the object itself, so a job pays one small object for it. Every method but
    `acquire` and `__enter__` is called with `_LOCK` held, as a condition requires."""

    __slots__ = ()

    def acquire(self, blocking: bool = True, timeout: float = -1) -> bool:
        return _LOCK.acquire(blocking, timeout)

    def release(self) -> None:
        _LOCK.release()

    def __enter__(self) -> bool:
        return _LOCK.acquire()

    def __exit__(self, *exc: object) -> None:
        _LOCK.release()

    def wait(self, timeout: float | None = None) -> bool:
        if not _is_owned():
            raise RuntimeError("cannot wait on un-acquired lock")
        sleeper = _allocate_lock()
        sleeper.acquire()
        self.append(sleeper)
        saved = _release_save()
        woken = False
        try:
            if timeout is None:
                woken = sleeper.acquire()
            elif timeout > 0:
                woken = sleeper.acquire(True, timeout)
            else:
                woken = sleeper.acquire(False)
            return woken
        finally:
            _acquire_restore(saved)
            if not woken:
                try:
                    self.remove(sleeper)
                except ValueError:  # notified between the timeout and taking the lock back
                    pass

    def notify(self, n: int = 1) -> None:
        for sleeper in self[:n]:
            sleeper.release()
        del self[:n]

    def notify_all(self) -> None:
        for sleeper in self:
            sleeper.release()
        self.clear()

    def notify_all_later(self, wakes: list[Any]) -> None:
        """`notify_all`, but the sleepers' locks go to `wakes` (`Loop.wakes`), released by the I/O thread
        just before it blocks: woken now, a sleeper would only wait again, for the GIL the I/O thread holds.
        A sleeper that times out meanwhile is released all the same, harmlessly: nobody acquires it again."""
        wakes.extend(self)
        self.clear()


def notify_all_later(condition: Any, wakes: list[Any] | None) -> None:
    """Wake whoever waits on a job's `condition` (`Sleepers` or `threading.Condition`, with `JOBS_LOCK`
    held): when `wakes` is given and the condition is `Sleepers`, as the I/O thread next blocks; else now."""
    if wakes is not None and condition.__class__ is Sleepers:
        condition.notify_all_later(wakes)
    else:
        condition.notify_all()
