"""A running `Loop` for the worker package's tests: `running_loop` (its fixture, in conftest.py) runs one on a
thread of its own; `on_loop` runs a function on that thread and waits for it."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator

from ppft_worker.runtime.loop import Loop

__all__ = ["TIMEOUT", "on_loop", "running"]

TIMEOUT = 10.0


def running() -> Iterator[Loop]:
    """A `Loop` running on a thread of its own (`loop.thread`) until the generator resumes, then stopped (it
    must stop within `TIMEOUT` s) and closed: the body of the `running_loop` fixture."""
    loop = Loop()
    thread = threading.Thread(target=loop.run_forever, name="test-loop", daemon=True)
    thread.start()
    loop.thread = thread
    yield loop
    loop.stop()
    thread.join(TIMEOUT)
    assert not thread.is_alive(), "the loop did not stop"
    loop.close()


def on_loop(loop: Loop, fn: Callable[[], object]) -> None:
    """Run `fn` on the loop's thread and wait for it."""
    done = threading.Event()

    def run() -> None:
        try:
            fn()
        finally:
            done.set()

    loop.call_soon_threadsafe(run)
    assert done.wait(TIMEOUT)
