"""A job's exception rebuilt in the caller: as itself where its class exists here, else `RemoteJobError`.

The worker pickles the exception so that it loads as itself, with its `args`, attributes, `__notes__`,
`__cause__`, `__context__` and, for a group, its exceptions, without calling an `__init__` of its own
(`ppft_worker.process.picklers`). It is loaded here by an unpickler that stands in for each class (or
function) this process lacks, so that only the part that needs it is lost: each exception of the tree whose
class does not exist here becomes a `RemoteJobError` naming the class, with its message, attributes, notes and
chain, and the others arrive as themselves. Where nothing loads (no pickle came: neither ours nor dill's could
make one), the exception is rebuilt from its type name and message, as itself if its class exists here.

The worker's formatted traceback (the whole chain, as the worker would print it) becomes a
`RemoteTraceback` at the root of the chain: the `__cause__` of the job's exception when it has no cause
or context of its own (as `concurrent.futures` does), else of the exception its chain starts with, which is
printed first. So an uncaught one prints the remote traceback, then the chain as it was, then where the
caller called `job()`.

This runs on the I/O thread, for every failed job (`completion.complete_jobs`): it never raises, whatever the
exception's classes do while they load.
"""

from __future__ import annotations

import builtins
import importlib
import io
import operator
import pickle
import types
from typing import Any

from ppft_protocol import Result

from .errors import RemoteJobError, RemoteTraceback

__all__ = ["rebuild_exception"]

_MAX_STAND_INS = 256  # classes remembered; a peer naming more gets fresh ones

_MOVED = {
    ("ppft_worker.execute", "JobSetupError"): ("ppft_worker.errors", "JobSetupError"),
    ("ppft_worker.execute", "UnpicklableResultError"): ("ppft_worker.errors", "UnpicklableResultError"),
}
"""Where a class that a ppft 2.0.0 worker names lives now: its errors arrive as themselves here too."""


def rebuild_exception(result: Result) -> BaseException:
    """The exception of the failed job `result`, with the remote traceback at the root of its chain."""
    exc = _load(bytes(result.exception)) if result.exception else None
    if exc is None:
        exc = _by_name(result.error_type, result.error_message)
    else:
        exc = _settle(exc, result.error_message, {})
    if result.traceback:
        try:
            _chain_root(exc).__cause__ = RemoteTraceback(result.traceback)
        except Exception:  # noqa: BLE001 - a class that refuses its __cause__: keeps what it has
            pass
    return exc


# -- loading --------------------------------------------------------------------------------------------


class _Missing(RemoteJobError):
    """Stands for a class the pickle names and this process lacks, while it loads; made a plain
    `RemoteJobError` afterwards (`_settle`)."""

    remote_type = "?"

    def __init__(self, *args: Any, **kwargs: Any) -> None:  # whatever the pickle calls the class with
        BaseException.__init__(self, *args)

    def __setstate__(self, state: Any) -> None:
        if isinstance(state, tuple) and len(state) == 2:  # (dict, slots)
            state = {**(state[0] or {}), **(state[1] or {})}
        if isinstance(state, dict):
            for key, value in state.items():
                try:
                    setattr(self, key, value)
                except Exception:  # noqa: BLE001 - a value this stand-in cannot take
                    continue


_stand_ins: dict[tuple[str, str], type[_Missing]] = {}


def _stand_in(module: str, name: str) -> type[_Missing]:
    cls = _stand_ins.get((module, name))
    if cls is None:
        short = name.rpartition(".")[2] or "Missing"
        cls = types.new_class(short, (_Missing,), {}, lambda ns: ns.update(remote_type=f"{module}.{name}"))
        if len(_stand_ins) < _MAX_STAND_INS:
            _stand_ins[(module, name)] = cls
    return cls


class _ByName:
    """`operator.attrgetter(name)` as the worker uses it for a class of `__main__`, which stands in for the
    class when this process's `__main__` lacks it."""

    def __init__(self, *names: str) -> None:
        self._get = operator.attrgetter(*names)
        self._names = names

    def __call__(self, obj: Any) -> Any:
        try:
            return self._get(obj)
        except AttributeError:
            if isinstance(obj, types.ModuleType) and len(self._names) == 1:
                return _stand_in(obj.__name__, self._names[0])
            raise


class _Loader(pickle.Unpickler):
    """An unpickler that stands in for what this process lacks instead of failing the whole load."""

    def find_class(self, module: str, name: str) -> Any:
        if module == "operator" and name == "attrgetter":
            return _ByName
        module, name = _MOVED.get((module, name), (module, name))
        try:
            return super().find_class(module, name)
        except Exception:  # noqa: BLE001 - not installed, not there, or its import failed
            return _stand_in(module, name)


def _load(data: bytes) -> BaseException | None:
    for load in (_tolerant_loads, _dill_loads):
        try:
            loaded = load(data)
        except BaseException:  # noqa: BLE001 - the classes' own code may raise anything while loading
            continue
        if isinstance(loaded, BaseException):
            return loaded
    return None


def _tolerant_loads(data: bytes) -> object:
    return _Loader(io.BytesIO(data)).load()


def _dill_loads(data: bytes) -> object:
    import dill  # noqa: PLC0415 - only an exception the worker had to pickle with dill pays for it

    return dill.loads(data)


# -- after loading --------------------------------------------------------------------------------------


def _settle(exc: BaseException, message: str, seen: dict[int, BaseException]) -> BaseException:
    """`exc` with every stand-in of its tree made a `RemoteJobError`; `message` is the worker's `str()` of
    `exc` (the ones below get theirs from their args)."""
    done = seen.get(id(exc))
    if done is not None:
        return done
    if isinstance(exc, _Missing):
        settled: BaseException = RemoteJobError(exc.remote_type, message)
        for key, value in vars(exc).items():
            setattr(settled, key, value)
        settled.__suppress_context__ = exc.__suppress_context__
    else:
        settled = exc
    seen[id(exc)] = settled
    for link in ("__cause__", "__context__"):
        linked = getattr(exc, link)
        if linked is not None:
            setattr(settled, link, _settle(linked, _message(linked), seen))
    members = getattr(exc, "exceptions", None)
    derive = getattr(exc, "derive", None)
    if isinstance(members, (tuple, list)) and callable(derive) and settled is exc:
        new = [_settle(member, _message(member), seen) for member in members]
        if any(a is not b for a, b in zip(new, members, strict=True)):
            try:
                settled = derive(new)
            except Exception:  # noqa: BLE001 - a group that cannot take a RemoteJobError: left as it came
                return exc
            for key, value in vars(exc).items():
                setattr(settled, key, value)
            for link in ("__cause__", "__context__", "__suppress_context__"):
                setattr(settled, link, getattr(exc, link))
            seen[id(exc)] = settled
    return settled


def _message(exc: BaseException) -> str:
    """What `str()` of an exception of a class that does not exist here would have said: from its args."""
    try:
        return BaseException.__str__(exc)
    except Exception:  # noqa: BLE001 - an arg with a broken __str__
        return repr(exc.args)


def _chain_root(exc: BaseException) -> BaseException:
    """The exception `exc`'s chain starts with: the one printed first (following causes, and contexts that
    are not suppressed)."""
    seen = {id(exc)}
    while True:
        below = exc.__cause__
        if below is None and not exc.__suppress_context__:
            below = exc.__context__
        if below is None or id(below) in seen:
            return exc
        seen.add(id(below))
        exc = below


def _by_name(type_name: str, message: str) -> BaseException:
    """An exception of class `type_name` (if this process has it) with `message`; else `RemoteJobError`."""
    module_name, _, qualname = type_name.rpartition(".")
    module_name, qualname = _MOVED.get((module_name, qualname), (module_name, qualname))
    try:  # as the pickle would have: its find_class imports the module
        owner: Any = builtins if module_name == "builtins" else importlib.import_module(module_name)
    except BaseException:  # noqa: BLE001 - not installed here, or its import fails: a RemoteJobError
        owner = None
    cls: Any = owner
    for part in qualname.split(".") if owner is not None else ():
        cls = getattr(cls, part, None)
    if isinstance(cls, type) and issubclass(cls, BaseException):
        for without_init in (False, True):
            try:
                exc = _new_without_init(cls, message) if without_init else cls(message)
                str(exc)  # an instance whose fields its __init__ sets may not even print
            except Exception:  # noqa: BLE001 - an __init__ that wants other arguments: the next way
                continue
            if isinstance(exc, cls):
                return exc
    return RemoteJobError(type_name, message)


def _new_without_init(cls: type[BaseException], message: str) -> BaseException:
    base: Any = next(b for b in cls.__mro__ if b.__module__ == "builtins")
    return base.__new__(cls, message)  # type: ignore[no-any-return]
