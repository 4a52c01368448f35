"""ppft 1.7's `ppft.common`: small utilities that classic code imports, with ppft 1.7's behaviour.

`start_thread`, `get_class_hierarchy`, `is_not_imported`, `portnumber`, `randomport`, and `str_`/`b_`, the
text/bytes converters of ppft 1.7's wire format (kept because user code such as the classic reverse-md5
example calls `b_`). Nothing in ppft 2 itself relies on this module; it must stay free of I/O at import.
"""

from __future__ import annotations

import ast
import random
import threading
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from ppft_protocol import PPFTError

from ._about import copyright
from .version import __version__

__all__ = [
    "RangeExhaustedError",
    "__version__",
    "b_",
    "copyright",
    "get_class_hierarchy",
    "is_not_imported",
    "portnumber",
    "randomport",
    "start_thread",
    "str_",
    "version",
]

version = __version__


class RangeExhaustedError(PPFTError, RuntimeError):
    """`portnumber` has handed out every port of its range; make a new one (or widen the range).

    A `RuntimeError` too, which is what ppft 1.7 raised."""


def str_(byte: Any) -> Any:
    """Bytes as text: ASCII decoded; other bytes as ppft 1.7 wrote them (`'[200, 1]{B}'`, which `b_`
    reverses). Anything without `decode` is returned unchanged."""
    if not hasattr(byte, "decode"):
        return byte
    try:
        return byte.decode("ascii")
    except UnicodeDecodeError:
        return repr(list(byte)) + "{B}"


def b_(string: Any) -> Any:
    """Text as bytes: latin-1 encoded, or the bytes `str_` wrote as `'[...]{B}'`. Anything without
    `encode` is returned unchanged."""
    if not hasattr(string, "encode"):
        return string
    if not string.endswith("]{B}"):
        return string.encode("latin-1")
    return bytes(ast.literal_eval(string[:-3]))  # ppft 1.7 used eval; a list literal is all it can be


def start_thread(
    name: str,
    target: Callable[..., Any],
    args: Iterable[Any] = (),
    kwargs: Mapping[str, Any] | None = None,
    daemon: bool = True,
) -> threading.Thread:
    """Start and return a thread running `target(*args, **kwargs)` (a daemon unless told otherwise)."""
    thread = threading.Thread(name=name, target=target, args=tuple(args), kwargs=dict(kwargs or {}))
    thread.daemon = daemon
    thread.start()
    return thread


def get_class_hierarchy(clazz: type) -> list[type]:
    """`clazz` and its bases, bases first, depth first, `object` left out (duplicates kept, as in ppft)."""
    classes: list[type] = []
    if clazz is object:
        return classes
    for base_class in clazz.__bases__:
        classes.extend(get_class_hierarchy(base_class))
    classes.append(clazz)
    return classes


def is_not_imported(arg: Any, modules: Iterable[str]) -> bool:
    """True unless `arg`'s module is one of `modules` or inside one of them."""
    args_module = str(arg.__module__)
    return not any(args_module == module or args_module.startswith(module + ".") for module in modules)


class portnumber:  # ppft 1.7's name (lower case)
    """Port selector: the first call returns a random port of [min, max], each later call the next one,
    wrapping from max to min; `RangeExhaustedError` once the range went all the way round.

        pick = portnumber(min=1024, max=65535)
        pick()
    """

    def __init__(self, min: int = 0, max: int = 64 * 1024) -> None:
        self.min = min
        self.max = max
        self.first = -1
        self.current = -1

    def __call__(self) -> int:
        if self.current < 0:
            self.current = random.randint(self.min, self.max)
            self.first = self.current
            return self.current
        self.current += 1
        if self.current > self.max:
            self.current = self.min
        if self.current == self.first:
            raise RangeExhaustedError(
                f"Range exhausted: every port of {self.min}-{self.max} was handed out; make a new portnumber"
            )
        return self.current


def randomport(min: int = 1024, max: int = 65536) -> int:
    """A random port number of [min, max]."""
    return portnumber(min, max)()
