"""A job's arguments: `submit`'s classic type checks, and pickling the argument tuple for a worker.

Plain data takes the standard pickle's fast path; what a worker cannot import by reference (a class or
function of the caller's `__main__`) travels by value with dill. Re-exported by `functions` too.
"""

from __future__ import annotations

import pickle
from typing import Any

from ppft_protocol import Pickled, PPFTError, is_pickled
from ppft_worker.oob import LargeBuffer, dumps, loads, probe

__all__ = ["ShippingError", "check_submit_args", "pickle_args", "pickle_args_by", "unpickle"]


class ShippingError(PPFTError, TypeError):
    """A job's function, a depfunc or its arguments cannot be pickled for a worker.

    A `TypeError` too, since it is the type of the object that cannot travel, as with `pickle` itself.
    """


# -- submit's argument checks ---------------------------------------------------------------------------


def check_submit_args(
    func: object,
    args: object,
    depfuncs: object,
    modules: object,
    callback: object,
    callbackargs: object,
    globals: object,
) -> None:
    """Raise ppft's classic `TypeError`s for the frequent mistakes in `Server.submit`'s arguments.

    The messages start with ppft 1.7's texts (code matching on them keeps working) and say what to do.
    """
    if not callable(func):
        raise TypeError(
            f"func argument must be a function or another callable, got {type(func).__name__}: "
            "pass the function itself (f), not its result (f())"
        )
    if not isinstance(args, tuple):
        raise TypeError(
            f"args argument must be a tuple, got {type(args).__name__}: write (x,) for one argument"
        )
    if not isinstance(depfuncs, tuple):
        raise TypeError(
            f"depfuncs argument must be a tuple, got {type(depfuncs).__name__}: "
            "write (helper,) for one function"
        )
    if not isinstance(modules, tuple):
        raise TypeError(
            f"modules argument must be a tuple, got {type(modules).__name__}: write ('math',) for one module"
        )
    if not isinstance(callbackargs, tuple):
        raise TypeError(
            f"callbackargs argument must be a tuple, got {type(callbackargs).__name__}: write (x,) for one"
        )
    if globals is not None and not isinstance(globals, dict):
        raise TypeError(
            f"globals argument must be a dictionary, got {type(globals).__name__}: pass globals() or a dict"
        )
    for module in modules:
        if not isinstance(module, str):
            raise TypeError(
                f"modules argument must be a list of strings, got a {type(module).__name__} in it: "
                "write module names or import lines, e.g. ('math', 'numpy as np', 'from os import path')"
            )
    for dep in depfuncs:
        if not callable(dep):
            raise TypeError(
                "depfuncs argument must be a tuple of functions and classes, "
                f"got a {type(dep).__name__} in it"
            )
    if callback is not None and not callable(callback):
        raise TypeError(f"callback argument must be callable or None, got {type(callback).__name__}")


# -- the body cache -------------------------------------------------------------------------------------


def pickle_args(args: tuple[Any, ...], protocol: int, shared: bool = True) -> bytes | Pickled:
    """A job's arguments as bytes: the stdlib pickle's fast path, dill where a worker needs values.

    A pickle naming `__main__` refers to a class or function of the caller's script, which a worker cannot
    import by reference; dill then pickles those by value (`byref=False, recurse=True`). Arguments that hold
    large buffers (numpy arrays, `PickleBuffer`s of 64 KiB and more; protocol 5) give a `Pickled`, whose
    buffers travel out of band (`ppft_worker.oob`): copied once, as they are now, and never again; into a
    shared segment for the local workers when they are large, unless `shared` is False (a server without
    local workers).
    """
    try:
        if protocol >= 5:
            data = pickle.dumps(args, protocol, buffer_callback=probe)
        else:
            data = pickle.dumps(args, protocol)
    except LargeBuffer:
        return _buffered(args, protocol, shared)
    except Exception:  # noqa: BLE001 - any failure of the fast path means: try dill, which raises clearly
        data = None
    if data is not None and data.find(b"__main__") < 0:  # find: `in` tries the needle as an int first
        return data
    return _dill_dumps(args, protocol)


def _buffered(args: tuple[Any, ...], protocol: int, shared: bool) -> bytes | Pickled:
    """Arguments with large out-of-band buffers: a `Pickled`, unless they need dill (then in band)."""
    try:
        data = dumps(args, protocol, shared=shared)
    except Exception:  # noqa: BLE001 - as pickle_args: dill's turn, which raises clearly
        return _dill_dumps(args, protocol)
    stream = data.data if isinstance(data, Pickled) else data
    if bytes(stream).find(b"__main__") < 0:
        return data
    return _dill_dumps(args, protocol)


def pickle_args_by(obj: object, protocol: int, *, force_dill: bool = False) -> tuple[bytes, bool]:
    """`pickle_args` for any object, and whether dill made the pickle (its loader may be needed).

    `force_dill`: the stdlib pickle was already judged unfit (the caller tried it)."""
    if not force_dill:
        try:
            data = pickle.dumps(obj, protocol)
        except Exception:  # noqa: BLE001 - see pickle_args
            data = None
        if data is not None and data.find(b"__main__") < 0:
            return data, False
    return _dill_dumps(obj, protocol), True


def _dill_dumps(obj: object, protocol: int) -> bytes:
    """dill's pickle, its code objects loadable by another Python where their source is known
    (`ppft_worker.pythons`)."""
    from ppft_worker.portable import portable_dumps  # noqa: PLC0415 - only paid for by arguments that need it

    try:
        return portable_dumps(obj, protocol, byref=False, recurse=True)
    except Exception as exc:
        raise ShippingError(
            f"the job's arguments cannot be sent to a worker: neither pickle nor dill can serialize them "
            f"({type(exc).__name__}: {exc}); pass plain data or instances of classes defined in a module"
        ) from exc


def unpickle(data: bytes | memoryview | Pickled) -> object:
    """Load a pickle made by `pickle` or `dill` (stdlib loader; dill's only for its `__builtin__` names).

    Most dill pickles load with `pickle.loads` (dill registers nothing global: its reconstructors are
    importable functions). The exception is the few objects dill writes as `__builtin__.<name>`, such as a
    function whose globals are a `__main__` dictionary; those need dill's own loader.
    """
    if data.__class__ is Pickled:  # a value the local pool mapped from a shared segment
        return loads(data)
    try:
        return pickle.loads(data)  # type: ignore[arg-type]
    except ModuleNotFoundError as exc:
        if exc.name != "__builtin__":
            raise
    except pickle.UnpicklingError:
        if is_pickled(data):  # out-of-band buffers (protocol version 2)
            return loads(data)
        raise
    import dill  # noqa: PLC0415 - only for dill pickles that need it

    return dill.loads(bytes(data))  # type: ignore[arg-type]
