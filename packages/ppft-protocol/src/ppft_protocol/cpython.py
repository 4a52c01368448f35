"""Every private name of CPython that ppft uses, each with why, its public fallback, and a check of it.

Nothing else in ppft imports a private module of the standard library (`_pickle`, `_signal`, `_ctypes`, ...)
or touches a private attribute of a standard-library object: it asks this module. Each name below says why
the public API does not do (nearly always: start-up time of a worker, or an object made per job) and what
is used instead when the private name is missing or changed on some Python. `check()` returns what does not
hold on the running Python (an empty list when all is as assumed); the tests run it on every supported
Python found on the machine (3.10-3.13): `python cpython.py` runs it alone, as this file needs nothing but
the standard library.

It lives in ppft-protocol, the package every other one imports, though it is no part of the protocol. It
must stay cheap to import (a worker imports it on its way to its first result): at import it only looks up
modules the interpreter loaded at start-up anyway (`_operator`, `_signal`, the C pickler, the builtin
SHA-256); everything else (`_ctypes`, `threading`, `concurrent.futures`) is looked at on first use. It never
changes what it finds.
"""

from __future__ import annotations

import os
import sys

TYPE_CHECKING = False
if TYPE_CHECKING:
    import pickle as fast_pickle
    import signal as _sig
    from collections.abc import Callable
    from hashlib import sha256
    from hmac import compare_digest
    from threading import Lock as allocate_lock
    from typing import Any
else:
    # The constant-time comparison of `operator` (`hmac.compare_digest`'s own fallback); `hmac` loads
    # `hashlib` and OpenSSL, on a worker's way to its first result (`scripts/bench --only startup`).
    try:
        from _operator import _compare_digest as compare_digest
    except ImportError:
        from hmac import compare_digest

    # The interpreter's own SHA-256 (`hashlib` starts OpenSSL for it); `_sha2` from Python 3.12.
    try:
        from _sha2 import sha256
    except ImportError:
        try:
            from _sha256 import sha256
        except ImportError:
            from hashlib import sha256

    # The C pickler: the `pickle` module loads `re` and `enum` as well, on a worker's way to its first result.
    try:
        import _pickle as fast_pickle
    except ImportError:
        import pickle as fast_pickle

    # The C half of `signal`: `signal`'s wrappers make an enum of each of 64 signal numbers at every call,
    # on the way of every forked worker (`scripts/bench --only startup`).
    try:
        import _signal as _sig
    except ImportError:
        import signal as _sig

    # A plain lock without `threading` (which a worker does not load on its way to its first result): what
    # `threading.Lock` is.
    try:
        from _thread import allocate_lock
    except ImportError:
        from threading import Lock as allocate_lock

__all__ = [
    "FUTURE_ATTRIBUTES",
    "FUTURE_STATES",
    "allocate_lock",
    "check",
    "compare_digest",
    "fast_pickle",
    "libc_function",
    "preload_libc_access",
    "pthread_sigmask",
    "reinit_after_fork",
    "rlock_condition_hooks",
    "sha256",
    "valid_signals",
]

pthread_sigmask = _sig.pthread_sigmask
valid_signals = _sig.valid_signals
SIG_BLOCK: int = _sig.SIG_BLOCK
SIG_SETMASK: int = _sig.SIG_SETMASK


# -- libc functions (ctypes) ------------------------------------------------------------------------------


def libc_function(name: str) -> Callable[..., int] | None:
    """The C library's function `name`, called with int arguments and returning an int; None if not found.

    Through `_ctypes` (the C half of `ctypes`: its `dlopen`, `dlsym` and `call_function` are what `CDLL`
    uses): importing `ctypes` itself would lengthen a worker's way to its first result
    (`scripts/bench --only startup`).
    Fallback: `ctypes.CDLL(None)`."""
    try:
        import _ctypes  # noqa: PLC0415 - see the docstring

        address = _ctypes.dlsym(_ctypes.dlopen(None, os.RTLD_NOW), name)  # type: ignore[arg-type]
        call = _ctypes.call_function
    except (ImportError, AttributeError, OSError):
        pass
    else:
        return lambda *args: int(call(address, args))
    try:
        import ctypes  # noqa: PLC0415

        function = getattr(ctypes.CDLL(None, use_errno=True), name)
    except (ImportError, AttributeError, OSError):
        return None
    return lambda *args: int(function(*args))


def preload_libc_access() -> None:
    """Import what `libc_function` uses, before a fork (a forked child must not import it mid-flight)."""
    try:
        import _ctypes  # noqa: F401, PLC0415 - see libc_function
    except ImportError:
        pass


# -- concurrent.futures.Future -----------------------------------------------------------------------------

FUTURE_STATES = ("PENDING", "RUNNING", "CANCELLED", "CANCELLED_AND_NOTIFIED", "FINISHED")
"""The values of `Future._state` (constants of `concurrent.futures._base`, unchanged since Python 3.2).

`ppft_client.job.Job` is a `Future` that a client makes 100,000 times a second, so it does not call
`Future.__init__` (which makes a condition, a lock and two lists per future) and keeps the state Future's
own methods (`cancel`, `exception`, `set_running_or_notify_cancel`, ...) and `concurrent.futures.wait` and
`as_completed` read: `FUTURE_ATTRIBUTES`, with these states. Copied here rather than imported from
`concurrent.futures._base`; `check()` compares them."""

FUTURE_ATTRIBUTES = ("_condition", "_state", "_result", "_exception", "_waiters", "_done_callbacks")
"""What `Future.__init__` sets and Future's methods, `wait` and `as_completed` use: `Job` provides each
(`_condition` and `_waiters` made on first use). `check()` verifies the list, and that `wait` and
`as_completed` reach a future through `_condition` and `_waiters` only."""


# -- threading.RLock ----------------------------------------------------------------------------------------


def rlock_condition_hooks(
    lock: Any,
) -> tuple[Callable[[], bool], Callable[[], Any], Callable[[Any], None]] | None:
    """`(is_owned, release_save, acquire_restore)` of an `RLock`, or None if it lacks them.

    They are what `threading.Condition` uses to wait on a reentrant lock (release it whatever its depth,
    then take it back at that depth). `ppft_client.joblock.Sleepers` is a job's condition over the lock all
    jobs share and needs them too, to be one small object instead of a `Condition` (eight objects for the
    garbage collector). Fallback (None): the job makes a real `threading.Condition` over that lock."""
    try:
        return lock._is_owned, lock._release_save, lock._acquire_restore
    except AttributeError:
        return None


def reinit_after_fork(lock: Any) -> bool:
    """Have a forked child start with `lock` free (a thread of the parent may hold it at the fork); False
    where the lock lacks `_at_fork_reinit`, the method `threading` itself uses for its own locks. No public
    API does it; without it, a child forked while another thread held the lock must not use it."""
    reinit = getattr(lock, "_at_fork_reinit", None)
    if reinit is None or not hasattr(os, "register_at_fork"):
        return False
    os.register_at_fork(after_in_child=reinit)
    return True


# -- the check ----------------------------------------------------------------------------------------------


def check() -> list[str]:
    """What does not hold on this Python of what this module assumes; [] when everything does."""
    problems: list[str] = []
    problems += _check_digests()
    problems += _check_pickle()
    problems += _check_signals()
    problems += _check_libc()
    problems += _check_futures()
    problems += _check_rlock()
    return problems


def _check_digests() -> list[str]:
    import hashlib  # noqa: PLC0415
    import hmac  # noqa: PLC0415

    problems = []
    if hmac.compare_digest is compare_digest:
        problems.append("no _operator._compare_digest: hmac.compare_digest is used")
    pairs = ((b"ab", b"ab"), (b"ab", b"ac"), (b"ab", b"abc"), (b"", b""))
    if [compare_digest(a, b) for a, b in pairs] != [hmac.compare_digest(a, b) for a, b in pairs]:
        problems.append("_operator._compare_digest does not compare as hmac.compare_digest")
    if sha256(b"ppft").digest() != hashlib.sha256(b"ppft").digest():
        problems.append("the builtin sha256 differs from hashlib.sha256")
    if sha256 is hashlib.sha256:
        problems.append("no builtin sha256 module (_sha2 or _sha256): hashlib's is used")
    return problems


def _check_pickle() -> list[str]:
    import pickle  # noqa: PLC0415

    problems = []
    if fast_pickle is pickle:
        problems.append("no _pickle: the pure-Python pickle is used")
    if fast_pickle.loads(fast_pickle.dumps({"a": (1, 2.5)}, 5)) != {"a": (1, 2.5)}:
        problems.append("_pickle does not round-trip")

    class Probe(fast_pickle.Pickler):
        def reducer_override(self, obj: object) -> Any:
            return (str, ("overridden",)) if obj == 7 + 0j else NotImplemented

    import io  # noqa: PLC0415

    buffer = io.BytesIO()
    Probe(buffer, 4).dump([7 + 0j])
    if fast_pickle.loads(buffer.getvalue()) != ["overridden"]:
        problems.append("_pickle.Pickler subclasses do not honour reducer_override")
    return problems


def _check_signals() -> list[str]:
    import signal  # noqa: PLC0415

    problems = []
    if _sig is signal:
        problems.append("no _signal: signal's wrappers are used")
    if (SIG_BLOCK, SIG_SETMASK) != (signal.SIG_BLOCK, signal.SIG_SETMASK):
        problems.append("_signal's SIG_BLOCK/SIG_SETMASK differ from signal's")
    if set(valid_signals()) != set(signal.valid_signals()):
        problems.append("_signal.valid_signals differs from signal.valid_signals")
    old = pthread_sigmask(SIG_BLOCK, {signal.SIGUSR2})
    try:
        if signal.SIGUSR2 not in signal.pthread_sigmask(SIG_BLOCK, ()):
            problems.append("_signal.pthread_sigmask does not block")
    finally:
        pthread_sigmask(SIG_SETMASK, old)
    return problems


def _check_libc() -> list[str]:
    try:
        import _ctypes  # noqa: PLC0415
    except ImportError:
        return ["no _ctypes: ctypes is used (or nothing, without ctypes)"]
    if not all(hasattr(_ctypes, name) for name in ("dlopen", "dlsym", "call_function")):
        return ["_ctypes lacks dlopen, dlsym or call_function: ctypes.CDLL is used"]
    getpid = libc_function("getpid")
    if getpid is None or getpid() != os.getpid():
        return ["libc_function('getpid')() is not os.getpid()"]
    return []


def _check_futures() -> list[str]:
    import concurrent.futures  # noqa: PLC0415
    import concurrent.futures._base as base  # noqa: PLC0415 - what this check is for

    problems = []
    states = tuple(getattr(base, name, None) for name in FUTURE_STATES)
    if states != FUTURE_STATES:
        problems.append(f"concurrent.futures._base's states are {states}, not {FUTURE_STATES}")
    made = set(vars(concurrent.futures.Future()))
    if made != set(FUTURE_ATTRIBUTES):
        problems.append(f"Future() sets {sorted(made)}, not {sorted(FUTURE_ATTRIBUTES)}")

    # wait() and as_completed() must reach a future through _condition and _waiters (and _state) only
    import threading  # noqa: PLC0415

    touched: set[str] = set()

    class Watched(concurrent.futures.Future):  # type: ignore[type-arg]
        def __getattribute__(self, name: str) -> Any:
            if name.startswith("_") and not name.startswith("__"):
                touched.add(name)
            return super().__getattribute__(name)

    futures = [Watched(), Watched()]
    timer = threading.Timer(0.01, futures[0].set_result, (1,))
    timer.start()
    done, _ = concurrent.futures.wait(futures, timeout=5, return_when=concurrent.futures.FIRST_COMPLETED)
    futures[1].set_result(2)
    if sorted(f.result() for f in concurrent.futures.as_completed(futures, timeout=5)) != [1, 2] or not done:
        problems.append("wait/as_completed do not complete on a Future subclass")
    timer.join()
    future_methods = {name for name in touched if callable(getattr(concurrent.futures.Future, name, None))}
    extra = touched - set(FUTURE_ATTRIBUTES) - future_methods
    if extra:
        problems.append(f"wait/as_completed/set_result use {sorted(extra)} beyond FUTURE_ATTRIBUTES")
    return problems


def _check_rlock() -> list[str]:
    import threading  # noqa: PLC0415

    problems = []
    lock = threading.RLock()
    hooks = rlock_condition_hooks(lock)
    if hooks is None:
        return ["RLock lacks _is_owned/_release_save/_acquire_restore: jobs wait on threading.Condition"]
    is_owned, release_save, acquire_restore = hooks
    if is_owned():
        problems.append("RLock._is_owned() is true for a free lock")
    lock.acquire()
    lock.acquire()
    if not is_owned():
        problems.append("RLock._is_owned() is false for a lock this thread holds")
    saved = release_save()
    other: list[bool] = []

    def take() -> None:
        if lock.acquire(timeout=5):
            other.append(True)
            lock.release()

    thread = threading.Thread(target=take)
    thread.start()
    thread.join(10)
    if other != [True]:
        problems.append("RLock._release_save() does not free a lock held twice")
    acquire_restore(saved)
    lock.release()
    if not is_owned():
        problems.append("RLock._acquire_restore() does not restore the depth")
    lock.release()
    if not callable(getattr(lock, "_at_fork_reinit", None)):
        problems.append("RLock lacks _at_fork_reinit: a forked child cannot use a lock held at the fork")
    return problems


if __name__ == "__main__":
    found = check()
    print(f"Python {sys.version.split()[0]}: " + ("all as assumed" if not found else "; ".join(found)))
    sys.exit(1 if found else 0)
