"""pathos as a real client: `pathos.pools.ParallelPool` runs unchanged on this project's `ppft`.

pathos (installed by `scripts/install --test` with `--no-deps`, so our ppft stays) builds on ppft 1.7's
internals: `_Task` subclassed by its `ApplyResult`, `task.lock` and `task.sresult`, `Server.ppservers`,
`auto_ppservers` and `_exiting`, and `submit(f, args, globals=globals())` with its own module's globals.
pathos's own waits take no timeout (its `ApplyResult.wait` ignores it), so each call here runs in a thread
joined with a deadline.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest

pathos_pools = pytest.importorskip("pathos.pools", reason="pathos is installed by scripts/install --test")
import pathos.parallel  # noqa: E402

import ppft  # noqa: E402
from clusterlib import SECRET  # noqa: E402
from ppft_client.shipping.functions import function_body  # noqa: E402

ParallelPool = pathos_pools.ParallelPool
STATE: dict[str, ppft.Server] = ParallelPool.__state__


def square(x):
    return x * x


def add(x, y):
    return x + y


def root(x):
    return math.sqrt(x)  # math is this module's import: the client ships it as an import line


def fails(x):
    raise ValueError(f"cannot take {x}")


def bounded(call: Callable[[], Any], timeout: float = 30.0) -> Any:
    """`call()` in a thread, failing the test if it has not returned within `timeout` seconds."""
    box: dict[str, Any] = {}

    def run() -> None:
        try:
            box["value"] = call()
        except BaseException as exc:
            box["error"] = exc

    thread = threading.Thread(target=run, name="pathos-call", daemon=True)
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        pytest.fail(f"pathos call did not return within {timeout} s")
    if "error" in box:
        raise box["error"]
    return box["value"]


@pytest.fixture
def pools() -> Iterator[Callable[..., Any]]:
    """`pools(...)`: ParallelPools whose job servers are destroyed (and forgotten by pathos) at teardown."""
    before = dict(STATE)
    made: list[Any] = []

    def make(*args: Any, **kwargs: Any) -> Any:
        pool = ParallelPool(*args, **kwargs)
        made.append(pool)
        return pool

    yield make
    for pool in made:
        pool.clear()
    for key, server in list(STATE.items()):
        if before.get(key) is not server:
            server.destroy()
            STATE.pop(key, None)


# -- local workers ----------------------------------------------------------------------------------


def test_map_returns_ordered_results(pools) -> None:
    pool = pools(nodes=2)
    assert bounded(lambda: pool.map(pow, [1, 2, 3, 4], [5, 6, 7, 8])) == [1, 64, 2187, 65536]


def test_map_ships_modules_the_function_uses(pools) -> None:
    pool = pools(nodes=2)
    assert bounded(lambda: pool.map(root, [4, 9, 16])) == [2.0, 3.0, 4.0]


def test_map_runs_lambdas_and_closures(pools) -> None:
    pool = pools(nodes=2)
    k = 5
    assert bounded(lambda: pool.map(lambda x: x * k, [1, 2, 3])) == [5, 10, 15]


def test_imap_yields_results_in_order(pools) -> None:
    pool = pools(nodes=2)
    assert bounded(lambda: list(pool.imap(square, range(20)))) == [x * x for x in range(20)]


def test_uimap_yields_every_result(pools) -> None:
    pool = pools(nodes=2)
    assert sorted(bounded(lambda: list(pool.uimap(square, range(20))))) == [x * x for x in range(20)]


def test_amap_get_returns_the_results(pools) -> None:
    pool = pools(nodes=2)
    result = pool.amap(add, [1, 2, 3], [10, 20, 30])
    assert bounded(lambda: result.get(timeout=30)) == [11, 22, 33]
    assert result.ready() and result.successful()


def test_pipe_returns_one_value(pools) -> None:
    pool = pools(nodes=2)
    assert bounded(lambda: pool.pipe(add, 2, 3)) == 5


def test_apipe_get_returns_the_value(pools) -> None:
    pool = pools(nodes=2)
    result = pool.apipe(square, 12)
    assert bounded(lambda: result.get(timeout=30)) == 144
    assert result.ready() and result.successful()


def test_apipe_of_a_failing_function_is_unsuccessful_with_its_traceback(pools, capsys) -> None:
    pool = pools(nodes=2)
    result = pool.apipe(fails, 3)
    assert bounded(lambda: result.get(timeout=30)) is None  # as on ppft 1.7: value None, traceback printed
    assert result.successful() is False
    out = capsys.readouterr().out
    assert "ValueError: cannot take 3" in out and "Traceback" in out


def test_pool_uses_the_requested_local_workers(pools) -> None:
    pool = pools(nodes=2)
    bounded(lambda: pool.map(square, [1]))
    server = STATE[pool._id]
    assert isinstance(server, ppft.Server) and server.get_ncpus() == 2
    assert server.get_stats()["local"].njobs == 1


def test_stats_reports_the_pools_jobs(pools) -> None:
    pool = pools(nodes=2)
    bounded(lambda: pool.map(square, range(6)))
    text = pathos.parallel.stats(pool)
    assert "Job execution statistics" in text
    assert "     6 |        100.00 |" in text and text.rstrip().endswith("2 cores")
    assert "Job execution statistics" in pathos.parallel.stats()  # every pool's server


# -- close, join, clear, restart ---------------------------------------------------------------------


def test_close_refuses_new_jobs(pools) -> None:
    pool = pools(nodes=2)
    bounded(lambda: pool.map(square, [1]))
    pool.close()
    with pytest.raises(ValueError, match="Pool not running"):
        pool.map(square, [2])


def test_restart_after_close_serves_again_on_the_same_server(pools) -> None:
    pool = pools(nodes=2)
    bounded(lambda: pool.map(square, [1]))
    server = STATE[pool._id]
    pool.close()
    pool.restart()
    assert bounded(lambda: pool.map(square, [3, 4])) == [9, 16]
    assert STATE[pool._id] is server


def test_join_destroys_the_server_and_restart_makes_a_new_one(pools) -> None:
    pool = pools(nodes=2)
    bounded(lambda: pool.map(square, [1]))
    old = STATE[pool._id]
    pool.close()
    bounded(pool.join)
    with pytest.raises(ppft.DestroyedServerError):
        old.submit(square, (1,))
    pool.restart()
    assert bounded(lambda: pool.map(square, [5])) == [25]
    assert STATE[pool._id] is not old


def test_clear_destroys_the_server_and_forgets_it(pools) -> None:
    pool = pools(nodes=2)
    bounded(lambda: pool.map(square, [1]))
    server = STATE[pool._id]
    bounded(pool.clear)
    assert pool._id not in STATE
    with pytest.raises(ppft.DestroyedServerError):
        server.submit(square, (1,))
    assert bounded(lambda: pool.map(square, [6])) == [36]  # a cleared pool makes a new server on demand


# -- a real ppserver -------------------------------------------------------------------------------------


def test_ncpus_0_runs_every_job_on_the_ppserver(pools, cluster, monkeypatch) -> None:
    node = cluster.ppserver(2)
    monkeypatch.setenv("PPFT_SECRET", SECRET)  # pathos passes no secret: the client resolves this one
    pool = pools(ncpus=0, servers=(node.address,))
    assert bounded(lambda: pool.map(square, range(10))) == [x * x for x in range(10)]
    assert bounded(lambda: pool.amap(add, [1, 2], [3, 4]).get()) == [4, 6]
    assert bounded(lambda: pool.apipe(square, 7).get()) == 49
    assert bounded(lambda: pool.pipe(add, 1, 1)) == 2
    assert sorted(bounded(lambda: list(pool.uimap(square, range(4))))) == [0, 1, 4, 9]
    server = STATE[pool._id]
    assert server.ppservers == [("127.0.0.1", node.port)] and server.get_ncpus() == 0
    stats = server.get_stats()
    assert stats[node.address].njobs == 18 and stats["local"].njobs == 0
    assert f"| {node.address}" in pathos.parallel.stats(pool)
    assert repr(pool) == f"<pool ParallelPool(ncpus=0, servers=('{node.address}',))>"


# -- what pathos ships with every job ---------------------------------------------------------------------


def test_pathos_module_globals_add_nothing_to_a_function_body() -> None:
    pathos_globals = vars(pathos.parallel)  # what ParallelPool passes as globals= on every submit
    assert function_body(square, globals=pathos_globals) == function_body(square)
    assert function_body(root, globals=pathos_globals) == function_body(root)
