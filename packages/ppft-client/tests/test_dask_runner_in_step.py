"""The dask runner pickles what jobs give back with the very code of ppft_worker.process.picklers (it may
import nothing of ppft, so it holds a copy): the two copies stay the same, character for character."""

from __future__ import annotations

import inspect

import ppft_worker.process.dask_runner
import ppft_worker.process.picklers

MARKER = "# -- shared:"


def shared_part(module: object) -> str:
    source = inspect.getsource(module)  # type: ignore[arg-type]
    assert source.count(MARKER) == 1, f"{module} must have one {MARKER!r} line"
    return source[source.index(MARKER) :]


def test_the_dask_runner_shares_the_workers_exception_pickling_to_the_character():
    assert shared_part(ppft_worker.process.dask_runner) == shared_part(ppft_worker.process.picklers)


def test_the_dask_runner_uses_the_shared_picklers():
    source = inspect.getsource(ppft_worker.process.dask_runner)
    assert "data = pickle_exception(exc, protocol)" in source
    assert "data = dumps_main_by_name(value, protocol)" in source
