"""One measurement in a fresh process: `python child.py BACKEND SCENARIO PARAMS_JSON OUT_FILE`.

scripts/bench runs this file once per (implementation, scenario) so imports, caches and worker pools never
leak from one figure into the next. It runs in our venv and in the ppft 1.7.8 venv alike, so it must only use
the standard library and the implementation under test, and must stay valid Python 3.10. The job functions
live at the top level of this real file because ppft 1.7.8 ships a function as its source text (`inspect`).

It checks every value it gets back and exits non-zero on a wrong one: a figure from wrong results is never
written. It never decides a timeout: the parent kills it when it runs too long.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

# run as a script (`python child.py ...`), or imported as `_bench.child` (the scenarios take its functions)
settle = __import__(f"{__package__}.child_settle" if __package__ else "child_settle", fromlist=["_"]).settle

try:
    from ppft_protocol import PPFTError as _ErrorBase
except ImportError:  # the ppft 1.7.8 venv has none of our packages
    _ErrorBase = Exception  # type: ignore[misc,assignment]

__all__ = ["main"]

WORKERS = 2


class BenchValueError(_ErrorBase):
    """A job came back with a wrong value (the implementation under test is broken, not slow)."""


# ----------------------------------------------------------------------------------------- job functions
# Self-contained (no globals, no imports, builtin annotations only): ppft ships them as source and runs them
# in a bare namespace.


def inc(x: int) -> int:
    return x + 1


def echo(data: bytes) -> bytes:
    return data


def spin(n: int) -> int:
    total = 0
    for i in range(n):
        total += i * i
    return total


# ------------------------------------------------------------------------------------------------ backends


class _Backend:
    """The calls a scenario needs, written per API so no wrapper sits inside the timed loops."""

    def submit_all(self, fn: Any, arg_tuples: list[tuple[Any, ...]]) -> list[Any]:
        raise NotImplementedError

    def collect(self, handles: list[Any]) -> list[Any]:
        raise NotImplementedError

    def one(self, fn: Any, *args: Any) -> Any:
        raise NotImplementedError

    def map(self, fn: Any, items: range) -> list[Any]:
        raise NotImplementedError(f"{type(self).__name__} has no map")

    def close(self) -> None:
        raise NotImplementedError


class _FuturesBackend(_Backend):
    """ProcessPoolExecutor(2), or our `ppft.Executor(2)`: the concurrent.futures API."""

    def __init__(self, executor: Any) -> None:
        self.ex = executor

    def submit_all(self, fn: Any, arg_tuples: list[tuple[Any, ...]]) -> list[Any]:
        submit = self.ex.submit
        return [submit(fn, *args) for args in arg_tuples]

    def collect(self, handles: list[Any]) -> list[Any]:
        return [fut.result() for fut in handles]

    def one(self, fn: Any, *args: Any) -> Any:
        return self.ex.submit(fn, *args).result()

    def map(self, fn: Any, items: range) -> list[Any]:
        return list(self.ex.map(fn, items))

    def close(self) -> None:
        self.ex.shutdown(wait=True)


class _ClassicBackend(_Backend):
    """`pp.Server`: ppft 1.7.8 or ours, local (`Server(2)`) or remote (`Server(0, ppservers=...)`)."""

    def __init__(self, server: Any) -> None:
        self.server = server

    def submit_all(self, fn: Any, arg_tuples: list[tuple[Any, ...]]) -> list[Any]:
        submit = self.server.submit
        return [submit(fn, args) for args in arg_tuples]

    def collect(self, handles: list[Any]) -> list[Any]:
        return [job() for job in handles]

    def one(self, fn: Any, *args: Any) -> Any:
        return self.server.submit(fn, args)()

    def close(self) -> None:
        self.server.destroy()


class _DaskBackend(_Backend):
    """dask's own `Client.submit` and `Client.gather` on the cluster that the ppft dask node uses."""

    def __init__(self, address: str) -> None:
        from distributed import Client

        self.client = Client(address, timeout=30, set_as_default=False)

    def submit_all(self, fn: Any, arg_tuples: list[tuple[Any, ...]]) -> list[Any]:
        submit = self.client.submit
        return [submit(fn, *args, pure=False) for args in arg_tuples]

    def collect(self, handles: list[Any]) -> list[Any]:
        return list(self.client.gather(handles))

    def one(self, fn: Any, *args: Any) -> Any:
        return self.client.submit(fn, *args, pure=False).result()

    def close(self) -> None:
        self.client.close()


def _make_backend(backend: str, params: dict[str, Any]) -> _Backend:
    if backend == "ppe":
        from concurrent.futures import ProcessPoolExecutor

        return _FuturesBackend(ProcessPoolExecutor(WORKERS))
    if backend == "executor":
        import ppft

        return _FuturesBackend(ppft.Executor(WORKERS))
    if backend == "dask":
        return _DaskBackend(params["scheduler"])
    if backend == "classic":
        import ppft as pp

        remote = params.get("remote")
        if remote:
            # seal= only when asked: ppft 1.7.8 has no such keyword
            sealing: dict[str, Any] = {"seal": False} if params.get("unsealed") else {}
            if params.get("ssh"):  # an ssh:// node, reached by this ssh command (ssh_scenario.py)
                sealing["ssh"] = tuple(params["ssh"])
            return _ClassicBackend(pp.Server(0, ppservers=(remote,), secret=params["secret"], **sealing))
        return _ClassicBackend(pp.Server(WORKERS))
    raise SystemExit(f"unknown backend {backend!r}: expected ppe, executor, classic, dask, bare or bare-tcp")


# ----------------------------------------------------------------------------------------------- scenarios


def _check(got: list[Any], expected: list[Any], what: str) -> None:
    if got != expected:
        bad = (
            next(i for i, (g, e) in enumerate(zip(got, expected, strict=True)) if g != e)
            if len(got) == len(expected)
            else -1
        )
        shown = (
            "a list of a different length"
            if bad < 0
            else f"{got[bad]!r} at index {bad}, expected {expected[bad]!r}"
        )
        raise BenchValueError(f"{what}: wrong results ({shown}); the implementation under test is broken")


def _warm_up(b: _Backend) -> None:
    """Start every worker (a ppserver's direct workers too) and ship `inc` once, so the timed span measures
    the steady state."""
    settle(getattr(b, "server", None))
    _check(
        b.collect(b.submit_all(inc, [(i,) for i in range(4 * WORKERS)])),
        list(range(1, 4 * WORKERS + 1)),
        "warm-up",
    )


def _tiny(b: _Backend, n: int, rounds: int) -> dict[str, Any]:
    args = [(i,) for i in range(n)]
    expected = list(range(1, n + 1))
    rates = []
    for _ in range(rounds):
        start = time.perf_counter()
        values = b.collect(b.submit_all(inc, args))
        elapsed = time.perf_counter() - start
        _check(values, expected, f"tiny throughput ({n} jobs)")
        rates.append(n / elapsed)
    return {"jobs_per_s": max(rates), "rounds": rates, "n": n}


def _latency(b: _Backend, k: int) -> dict[str, Any]:
    samples = []
    for i in range(k):
        start = time.perf_counter()
        value = b.one(inc, i)
        samples.append(time.perf_counter() - start)
        if value != i + 1:
            raise BenchValueError(f"latency round trip {i}: got {value!r}, expected {i + 1}")
    samples.sort()
    p99 = samples[min(len(samples) - 1, round(0.99 * (len(samples) - 1)))]
    return {"median_us": statistics.median(samples) * 1e6, "p99_us": p99 * 1e6, "k": k}


def scenario_startup(backend: str, params: dict[str, Any]) -> dict[str, Any]:
    """Construct + first trivial result; the import of the package is timed apart (`import_s`)."""
    start = time.perf_counter()
    if backend == "ppe":
        import concurrent.futures  # noqa: F401
    else:
        import ppft  # noqa: F401
    imported = time.perf_counter()
    b = _make_backend(backend, params)
    try:
        value = b.one(inc, 41)
        elapsed = time.perf_counter() - start
    finally:
        b.close()
    if value != 42:
        raise BenchValueError(f"startup: first job returned {value!r}, expected 42")
    return {"startup_s": elapsed - (imported - start), "import_s": imported - start}


def scenario_tiny(backend: str, params: dict[str, Any]) -> dict[str, Any]:
    if backend in ("bare", "bare-tcp"):
        sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        import bare_pipeline  # checks its own results

        rates = [bare_pipeline.run(params["n"], tcp=backend == "bare-tcp") for _ in range(params["rounds"])]
        return {"jobs_per_s": max(rates), "rounds": rates, "n": params["n"]}
    b = _make_backend(backend, params)
    try:
        _warm_up(b)
        return _tiny(b, params["n"], params["rounds"])
    finally:
        b.close()


def scenario_observe(backend: str, params: dict[str, Any]) -> dict[str, Any]:
    """`scenario_tiny` through our ppft (local or remote); with `status_file`, the client first serves its
    status page (`Server.serve_status`) and writes the page's URL there, for the harness to scrape."""
    b = _make_backend(backend, params)
    try:
        status_file = params.get("status_file")
        if status_file:
            assert isinstance(b, _ClassicBackend)
            url = b.server.serve_status("127.0.0.1:0")
            with open(status_file + ".tmp", "w", encoding="utf-8") as f:
                f.write(url)
            os.replace(status_file + ".tmp", status_file)
        _warm_up(b)
        return _tiny(b, params["n"], params["rounds"])
    finally:
        b.close()


def scenario_latency(backend: str, params: dict[str, Any]) -> dict[str, Any]:
    b = _make_backend(backend, params)
    try:
        _warm_up(b)
        return _latency(b, params["k"])
    finally:
        b.close()


def scenario_remote(backend: str, params: dict[str, Any]) -> dict[str, Any]:
    """Tiny throughput then latency through one pool (local or remote, as `params` says); with
    `params["sealed"]`, our remote link must be sealed (or unsealed) as that says, or the figure fails."""
    b = _make_backend(backend, params)
    try:
        _warm_up(b)
        sealed = _check_sealing(b, params["sealed"]) if "sealed" in params else None
        result = _tiny(b, params["n"], params["rounds"])
        result.update(_latency(b, params["k"]))
        if sealed is not None:
            result["sealed"] = sealed
        return result
    finally:
        b.close()


def scenario_cpu(backend: str, params: dict[str, Any]) -> dict[str, Any]:
    """Parallel efficiency = jobs * one job's time (run here) / (workers * wall time in the pool).

    Also the same with one job's time measured alone on the pool (`efficiency_pool`): pure scaling. The two
    differ by how fast the worker's copy of the code runs against this process's: ppe's forked workers
    run the very code object of this process, ppft's compile the function's source again, and CPython's
    speed on a tight loop moves by up to 10 % with where its code and objects land in memory.

    One job's time is the median of 3 runs here; the wall time is the best of `rounds`, because the
    2 vCPUs of this machine are not always both there (steal) and one bad round says nothing of the code.
    """
    probe = 100_000
    start = time.perf_counter()
    spin(probe)
    n = max(1000, int(probe * params["job_s"] / (time.perf_counter() - start)))
    singles = []
    for _ in range(3):
        start = time.perf_counter()
        expected = spin(n)
        singles.append(time.perf_counter() - start)
    single = statistics.median(singles)
    walls = []
    pool_singles = []
    b = _make_backend(backend, params)
    try:
        _warm_up(b)
        for _ in range(3):  # one job alone on a worker: the scaling figure's reference (see the docstring)
            start = time.perf_counter()
            _check([b.one(spin, n)], [expected], "cpu-bound, alone")
            pool_singles.append(time.perf_counter() - start)
        for _ in range(params["rounds"]):
            start = time.perf_counter()
            values = b.collect(b.submit_all(spin, [(n,)] * params["jobs"]))
            walls.append(time.perf_counter() - start)
            _check(values, [expected] * params["jobs"], "cpu-bound")
    finally:
        b.close()
    return {
        "efficiency": params["jobs"] * single / (WORKERS * min(walls)),
        "efficiency_pool": params["jobs"] * statistics.median(pool_singles) / (WORKERS * min(walls)),
        "single_s": single,
        "pool_single_s": statistics.median(pool_singles),
        "wall_s": min(walls),
        "walls": walls,
        "jobs": params["jobs"],
        "loop_n": n,
    }


def scenario_payload(backend: str, params: dict[str, Any]) -> dict[str, Any]:
    """MiB/s counts each job's payload once (one direction), though every byte travels both ways."""
    b = _make_backend(backend, params)
    out: dict[str, Any] = {}
    try:
        _warm_up(b)
        if "unsealed" in params:
            out["sealed"] = _check_sealing(b, not params["unsealed"])
        out.update(_echo(b, params["sizes"], params["rounds"], bool(params.get("numpy"))))
    finally:
        b.close()
    return out


def _echo(b: _Backend, sizes: list[list[int]], rounds: int, arrays: bool = False) -> dict[str, Any]:
    """Per payload size: the best MiB/s of `rounds` rounds of `count` echo jobs (`arrays`: of a numpy
    float64 array of that size, the arrays scenario, instead of bytes)."""
    out: dict[str, Any] = {}
    for size, count in sizes:
        data: Any = bytes(range(256)) * (size // 256)
        same: Callable[[Any], bool] = data.__eq__
        if arrays:
            import numpy

            data = numpy.arange(size // 8, dtype=numpy.float64)
            same = lambda value, data=data: bool((value == data).all())  # noqa: E731
        rates = []
        for _ in range(rounds):
            start = time.perf_counter()
            values = b.collect(b.submit_all(echo, [(data,)] * count))
            elapsed = time.perf_counter() - start
            if len(values) != count or not all(same(value) for value in values):
                raise BenchValueError(f"payload echo of {size} bytes came back different")
            rates.append(count * size / (1 << 20) / elapsed)
        out[str(size)] = {"mib_per_s": max(rates), "rounds": rates, "jobs": count}
    return out


def _check_sealing(b: _Backend, sealed: bool) -> bool:
    """That every remote link of our `Server` is sealed (or unsealed) as the figure will be labelled."""
    assert isinstance(b, _ClassicBackend)
    nodes = b.server._scheduler.nodes
    states = [node.sealed for node in nodes]
    if not states or any(state is not sealed for state in states):
        raise BenchValueError(
            f"the remote links are {'sealed' if sealed else 'unsealed'}-labelled but their channels say "
            f"sealed={states}: the figure would be mislabelled"
        )
    return sealed


def scenario_ssh(backend: str, params: dict[str, Any]) -> dict[str, Any]:
    """Tiny throughput, latency and payload through one remote node (a ppserver or an ssh node), whose
    link must be sealed or unsealed as `params["sealed"]` says."""
    b = _make_backend(backend, params)
    try:
        _warm_up(b)
        sealed = _check_sealing(b, params["sealed"])
        result = _tiny(b, params["n"], params["rounds"])
        result.update(_latency(b, params["k"]))
        result["payload"] = _echo(b, params["sizes"], params["rounds"])
    finally:
        b.close()
    result["sealed"] = sealed
    return result


def scenario_executor(backend: str, params: dict[str, Any]) -> dict[str, Any]:
    """`Executor.map(inc, range(n))` (default chunksize) and n `submit` calls then all results."""
    b = _make_backend(backend, params)
    n = params["n"]
    expected = list(range(1, n + 1))
    map_rates = []
    try:
        _warm_up(b)
        for _ in range(params["rounds"]):
            start = time.perf_counter()
            values = b.map(inc, range(n))
            map_rates.append(n / (time.perf_counter() - start))
            _check(values, expected, "executor map")
        result = _tiny(b, n, params["rounds"])
    finally:
        b.close()
    return {
        "map_jobs_per_s": max(map_rates),
        "map_rounds": map_rates,
        "submit_jobs_per_s": result["jobs_per_s"],
    }


def scenario_recycle(backend: str, params: dict[str, Any]) -> dict[str, Any]:
    """Throughput of tiny jobs and of ~1 ms jobs, with workers replaced every `max_jobs` jobs or never
    (ppft's `max_jobs_per_worker`; ProcessPoolExecutor's `max_tasks_per_child`)."""
    most = params.get("max_jobs")
    if backend == "ppe":
        from concurrent.futures import ProcessPoolExecutor

        extra: dict[str, Any] = {} if most is None else {"max_tasks_per_child": most}
        b: _Backend = _FuturesBackend(ProcessPoolExecutor(WORKERS, **extra))
    else:
        import ppft as pp

        b = _ClassicBackend(pp.Server(WORKERS, **({} if most is None else {"max_jobs_per_worker": most})))
    loop_n = params["loop_n"]  # calibrated once by the parent (`scenarios.recycle`)
    try:
        _warm_up(b)
        result = _tiny(b, params["n"], params["rounds"])
        expected = spin(loop_n)
        rates = []
        for _ in range(params["rounds"]):
            start = time.perf_counter()
            values = b.collect(b.submit_all(spin, [(loop_n,)] * params["spin_jobs"]))
            rates.append(params["spin_jobs"] / (time.perf_counter() - start))
            _check(values, [expected] * params["spin_jobs"], "recycled workers, 1 ms jobs")
    finally:
        b.close()
    return {"tiny_jobs_per_s": result["jobs_per_s"], "spin_jobs_per_s": max(rates), "spin_rounds": rates}


_SCENARIOS = {
    "startup": scenario_startup,
    "tiny": scenario_tiny,
    "latency": scenario_latency,
    "remote": scenario_remote,
    "dask": scenario_remote,  # the same figures, through a dask cluster: ppft's dask node or dask's client
    "cpu": scenario_cpu,
    "payload": scenario_payload,
    "executor": scenario_executor,
    "recycle": scenario_recycle,
    "observe": scenario_observe,
    "ssh": scenario_ssh,
}


def main(argv: list[str]) -> int:
    if len(argv) != 4 or argv[1] not in _SCENARIOS:
        raise SystemExit(
            f"usage: child.py BACKEND {{{','.join(_SCENARIOS)}}} PARAMS_JSON OUT_FILE (got {argv!r})"
        )
    backend, scenario, params_json, out_file = argv
    result = _SCENARIOS[scenario](backend, json.loads(params_json))
    result["python"] = sys.version.split()[0]
    with open(out_file, "w", encoding="utf-8") as out:
        json.dump(result, out)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
