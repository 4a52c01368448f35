"""ppft's own versions of the classic Parallel Python example programs; `python -m ppft.tests` runs them all.

Each example is a script (`python -m ppft.tests.sum_primes [ncpus]`) that submits its jobs to a local
`Server`, asserts the results against a computation done here, prints one line, and exits non-zero when a
result is wrong. They run as `__main__`, as user scripts do, so the functions and classes they define travel
to the workers the way a user's would. Nothing here may take long: the whole set stays within seconds.
"""

from __future__ import annotations

import sys

from ppft_protocol import PPFTError

__all__ = ["EXAMPLES", "ExampleError", "check", "ncpus_from_argv"]

EXAMPLES = (
    "sum_primes",
    "sum_primes_functor",
    "callback",
    "dynamic_ncpus",
    "auto_diff",
    "quicksort",
    "reverse_md5",
)
"""The example modules, in the order `python -m ppft.tests` runs them."""


def ncpus_from_argv() -> int | str:
    """The worker count an example was given on its command line, else "autodetect" (as the classics did)."""
    return int(sys.argv[1]) if len(sys.argv) > 1 else "autodetect"


class ExampleError(PPFTError, AssertionError):
    """An example computed a wrong result (an `AssertionError` too, but raised even under `python -O`)."""


def check(condition: object, message: str) -> None:
    """Raise `ExampleError(message)` unless `condition` holds."""
    if not condition:
        raise ExampleError(message)
