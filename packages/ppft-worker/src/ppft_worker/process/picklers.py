"""Pickling what a job gives back, for the caller's own classes: values, and exceptions as themselves.

A job's namespace is a module named `__main__` on the worker, so a class that a shipped source defined (or
that dill recreated there) is `__main__.X`; pickled by name, it loads in the caller as the caller's own
`__main__.X`, as with ppft 1.7. `dumps_main_by_name` does that for a value the plain pickle refused.

`pickle_exception` pickles the job's exception so that the caller's plain `pickle.loads` rebuilds it as
itself, whatever its `__init__` takes (the way tblib and billiard rebuild exceptions, written for ppft):

- its class by reference (one of `__main__` by name, so the caller's own), its `args`, its attributes
  (`__dict__`, `__notes__` included), the fields of its built-in bases (`OSError.filename`,
  `UnicodeError.start`, ...), its `__cause__`, `__context__` and `__suppress_context__`; for a group, its
  exceptions; each exception met on the way the same way;
- a class whose `__init__` is the built-in one is rebuilt by calling it (as `pickle` does); one with an
  `__init__` of its own is not called at all: the instance is made by its built-in base's `__new__` with the
  same `args` and its state is set back, as `pickle` does for any other object; a class with a `__reduce__`
  of its own keeps it when it works;
- a value that does not pickle (a lock, a socket) becomes its `repr`, so the rest still travels.

The pickle refers only to the standard library and the exception's own classes, so any ppft client loads it.
A class the caller lacks fails only its own part there (`ppft_client.rebuild`).

Both job runners use it (`execute.JobRunner`, and `dask_runner` on dask workers, where nothing of ppft is
installed), so this module travels as text (`travel`): it must import nothing beyond the standard library (the
C pickler from `ppft_protocol.cpython` apart, where ppft is installed), stay valid Python 3.10, and never
raise.
"""

from __future__ import annotations

import io
import types

TYPE_CHECKING = False
if TYPE_CHECKING:
    import pickle
    from collections.abc import Callable
    from typing import Any
elif __name__.startswith("ppft_worker."):  # installed: the C pickler alone (`pickle` loads `re` and `enum`)
    from ppft_protocol.cpython import fast_pickle as pickle
else:  # travelling to a host where ppft may not be installed
    import pickle

__all__ = ["dumps_main_by_name", "pickle_exception"]


class _MainByName(pickle.Pickler):
    """A pickler that refers to every class of `__main__` by its name, as `import __main__; __main__.X`.

    An instance of a class the caller's `__main__` defines (shipped as source, or by value with dill) comes
    back as an instance of the caller's own class this way, although the worker's `__main__` may hold no
    object of that name."""

    def reducer_override(self, obj: Any) -> Any:
        if obj is _MAIN:
            import importlib  # noqa: PLC0415 - rare path

            return importlib.import_module, ("__main__",)
        if isinstance(obj, type) and obj.__module__ == "__main__" and "<" not in obj.__qualname__:
            import operator  # noqa: PLC0415 - rare path

            return operator.attrgetter(obj.__qualname__), (_MAIN,)
        return NotImplemented


_MAIN = object()  # stands for the unpickling side's __main__ module


def dumps_main_by_name(value: object, protocol: int) -> bytes:
    """`value` pickled with the classes of `__main__` referred to by name (raises as `pickle.dumps` does)."""
    buffer = io.BytesIO()
    _MainByName(buffer, protocol).dump(value)
    return buffer.getvalue()


def pickle_exception(exc: BaseException, protocol: int) -> bytes:
    """`exc` pickled for the caller to rebuild as itself (see the module's docstring); dill's pickle if ours
    fails (a class defined inside a function); b"" if that fails too: the caller then has the type name,
    message and traceback, which travel beside it."""
    try:
        buffer = io.BytesIO()
        _ExceptionPickler(buffer, protocol).dump(exc)
        return buffer.getvalue()
    except Exception:  # noqa: BLE001 - dill's turn
        pass
    try:
        import dill  # noqa: PLC0415 - only exceptions our pickler cannot do pay for it

        return bytes(dill.dumps(exc, protocol=protocol, recurse=True))
    except Exception:  # noqa: BLE001 - the type, message and traceback still travel
        return b""


class _ExceptionPickler(_MainByName):
    """`_MainByName`, with every exception it meets reduced by `_reduce_exception`."""

    def __init__(self, file: Any, protocol: int) -> None:
        super().__init__(file, protocol)
        self.protocol = protocol

    def reducer_override(self, obj: Any) -> Any:
        if isinstance(obj, BaseException):
            try:
                return _reduce_exception(obj, self.protocol, self._picklable)
            except Exception:  # noqa: BLE001 - an exception too odd for us: pickle's own way
                return NotImplemented
        return super().reducer_override(obj)

    def _picklable(self, value: Any) -> Any:
        """`value` if it pickles, else its repr (an exception's arg or attribute that cannot travel)."""
        if value is None or isinstance(value, (BaseException, str, int, float, bytes, type)):
            return value  # exceptions are reduced here too; the others always pickle (a type: by name)
        try:
            _ExceptionPickler(io.BytesIO(), self.protocol).dump(value)
        except Exception:  # noqa: BLE001 - anything a value's pickling raises
            try:
                return repr(value)
            except Exception:  # noqa: BLE001 - a broken __repr__
                return f"<{type(value).__qualname__} object>"
        return value


_CHAIN = ("__cause__", "__context__", "__suppress_context__")
_NOT_FIELDS = frozenset(("args", "__traceback__", "__dict__", "__weakref__", "__notes__", *_CHAIN))
_FIELD_TYPES = (types.MemberDescriptorType, types.GetSetDescriptorType)


def _reduce_exception(exc: BaseException, protocol: int, picklable: Callable[[Any], Any]) -> tuple[Any, ...]:
    """The reduce tuple that rebuilds `exc` in the caller (see the module's docstring)."""
    cls = type(exc)
    builtin = _first_builtin(cls)
    state = _fields(exc, cls)
    attributes = getattr(exc, "__dict__", None)
    if attributes:
        state.update(attributes)
    if exc.__cause__ is not None:
        state["__cause__"] = exc.__cause__
    if exc.__context__ is not None:
        state["__context__"] = exc.__context__
    if exc.__suppress_context__:
        state["__suppress_context__"] = True
    state = {key: picklable(value) for key, value in state.items()}
    own_setstate = _owner(cls, "__setstate__").__module__ != "builtins"
    reducer = _owner(cls, "__reduce_ex__", "__reduce__")
    if reducer.__module__ != "builtins":  # a __reduce__ of its own: kept when it rebuilds the exception
        reduced = _working_reduce(exc, cls, protocol)
        if reduced is not None:
            if own_setstate or not (len(reduced) < 3 or reduced[2] is None or isinstance(reduced[2], dict)):
                return reduced  # its own state protocol: left as it is
            merged = dict(state)
            merged.update(reduced[2] or {})
            return (reduced[0], tuple(picklable(arg) for arg in reduced[1]), merged, *reduced[3:])
    args = tuple(picklable(arg) for arg in exc.args)
    if own_setstate:
        state = {key: value for key, value in state.items() if key in (attributes or ())}
    if _owner(cls, "__init__").__module__ == "builtins" and _owner(cls, "__new__").__module__ == "builtins":
        return cls, args, state  # pickle's own way: the built-in __init__ takes the args
    # an __init__ (or __new__) of its own, which may take other arguments: not called; `args` set again, as
    # some built-in __new__ (OSError's) leave them to the __init__
    if not own_setstate:
        state["args"] = args
    return builtin.__new__, (cls, *args), state


def _first_builtin(cls: type) -> type:
    for base in cls.__mro__:
        if base.__module__ == "builtins":
            return base
    return BaseException


def _owner(cls: type, *names: str) -> type:
    """The first class of `cls`'s MRO that defines one of `names`."""
    for base in cls.__mro__:
        attributes = vars(base)
        if any(name in attributes for name in names):
            return base
    return object


def _fields(exc: BaseException, cls: type) -> dict[str, Any]:
    """The fields of `exc` outside its `__dict__` that it has and that can be set back: those of its built-in
    bases (`OSError.filename`) and the `__slots__` of its classes."""
    fields: dict[str, Any] = {}
    for base in cls.__mro__:
        if base is BaseException or base is object:
            continue
        for name, descriptor in vars(base).items():
            if name in _NOT_FIELDS or name in fields or not isinstance(descriptor, _FIELD_TYPES):
                continue
            try:
                value = getattr(exc, name)
                if value is None:  # unset, as far as one can tell (OSError prints a filename2 set to None)
                    continue
                setattr(exc, name, value)  # settable here, so settable in the caller (not a read-only one)
            except Exception:  # noqa: BLE001 - unset, or read-only: rebuilt from args if at all
                continue
            fields[name] = value
    return fields


def _working_reduce(exc: BaseException, cls: type, protocol: int) -> tuple[Any, ...] | None:
    """`exc.__reduce_ex__(protocol)` if calling it gives back an instance of `cls`, else None."""
    try:
        reduced = exc.__reduce_ex__(protocol)
        if not isinstance(reduced, tuple) or len(reduced) < 2:
            return None
        if not isinstance(reduced[0](*reduced[1]), cls):
            return None
    except BaseException:  # noqa: BLE001 - whatever its __init__ does: then it is not called at all
        return None
    return reduced
