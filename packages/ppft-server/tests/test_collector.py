"""While a NodeServer serves, the garbage collector runs less often (its hot path makes and frees a few
objects per job); the process gets its own threshold back when the last server stops."""

from __future__ import annotations

import gc
import threading
import time
from collections.abc import Callable

from ppft_server import gctune
from ppft_server.node import NodeServer


def serving(count: int) -> tuple[list[NodeServer], list[threading.Thread]]:
    servers = [NodeServer(host="127.0.0.1", port=0, secret=b"s", workers=0) for _ in range(count)]
    threads = [threading.Thread(target=server.serve_forever, daemon=True) for server in servers]
    for thread in threads:
        thread.start()
    return servers, threads


def wait_for(predicate: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


def test_the_threshold_is_raised_while_serving_and_restored_after_the_last_server() -> None:
    before = gc.get_threshold()
    servers, threads = serving(2)
    try:
        wait_for(lambda: gctune._gc_serving == 2, "both servers to serve")
        assert gc.get_threshold()[0] >= 10_000
        assert gc.get_threshold()[1:] == before[1:]
        servers[0].stop()
        threads[0].join(10)
        assert not threads[0].is_alive()
        assert gc.get_threshold()[0] >= 10_000  # the other server still serves
    finally:
        for server in servers:
            server.stop()
        for thread in threads:
            thread.join(10)
    assert gc.get_threshold() == before
