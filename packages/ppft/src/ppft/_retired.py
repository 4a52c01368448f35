"""Names of ppft 1.7's internals that have no meaning any more, kept so that imports of them still work.

Each retired class says in its docstring what replaced it, and instantiating it raises `RetiredError`
naming the replacement: code that only imports the name (or checks `isinstance` against it) keeps working,
code that really used the old machinery learns at once what to use instead. This module must never grow
behaviour: a retired name that becomes useful again gets a real implementation elsewhere.
"""

from __future__ import annotations

from typing import Any, NoReturn

from ppft_protocol import PPFTError

__all__ = ["RetiredError", "RetiredInternal"]


class RetiredError(PPFTError, NotImplementedError):
    """A ppft 1.7 internal was instantiated that ppft 2 no longer has; the message names its replacement.

    A `NotImplementedError` too, the type Python code expects from a name that exists but cannot be used."""


class RetiredInternal:
    """Base of the retired classes: `replacement` says what took their place; instantiating raises."""

    replacement = "see the ppft documentation (docs/migration.md)"

    def __new__(cls, *args: Any, **kwargs: Any) -> NoReturn:
        raise RetiredError(
            f"{cls.__module__}.{cls.__qualname__} is a ppft 1.7 internal that ppft 2 no longer has: "
            f"{cls.replacement}"
        )
