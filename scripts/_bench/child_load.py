"""The measuring side of issue 8's long and many-process scenarios: soak, fan-out and fairness.

`python child_load.py BACKEND SCENARIO PARAMS_JSON OUT_FILE`, started by scripts/bench exactly like child.py,
whose job function and checks it reuses (it runs as a script beside child.py, so `import child` finds it).
Our ppft only: these scenarios read what ppft 1.7.8 does not have (`Server._scheduler.pool.pids` for the
workers' memory, `get_stats()` per node). It checks every value it gets back and exits non-zero on a wrong
one. It decides no timeout of its own except while it waits for the second client of the fairness
scenario, which it starts in its own process group (so the parent's kill reaches it) and kills by PID when
the scenario ends, however it ends.
"""

from __future__ import annotations

import gc
import json
import os
import select
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any

from child import WORKERS, BenchValueError, _check, _ClassicBackend, _warm_up, inc

from ppft_protocol import PPFTError

__all__ = ["main"]

_CONNECT_TIMEOUT = 30.0  # every ppserver of a fan-out connected
_FLOOD_TIMEOUT = 120.0  # the flooding client submitted, then drained, its jobs
_SUBMITTED = "submitted"


class BenchLoadError(PPFTError):
    """A scenario could not be set up as specified (a node never connected, the flooding client failed)."""


def _rss_mb(pid: int) -> float:
    """VmRSS of `pid` in MB (10**6 bytes), from /proc (the kernel's figure: what `top` shows as RES)."""
    with open(f"/proc/{pid}/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024 / 1e6
    raise BenchLoadError(f"/proc/{pid}/status has no VmRSS line: is {pid} a zombie? (run on Linux)")


def _memory(pids: list[int]) -> dict[str, Any]:
    """RSS of the client and each worker, and the client's count of gc-tracked objects: RSS moves with
    the allocator's whims by several MB, the object count only when something is kept (a leak)."""
    return {
        "client": _rss_mb(os.getpid()),
        "workers": [_rss_mb(pid) for pid in pids],
        "objects": len(gc.get_objects()),
    }


def scenario_soak(backend: str, params: dict[str, Any]) -> dict[str, Any]:
    """`jobs` tiny jobs through one Server(2), `chunk` at a time (submitted, collected, checked, dropped).

    Memory is read after each chunk, once the chunk's jobs are dropped: growth after the first chunk is what
    the following chunks add (a leak), growth from the start also counts the first chunk's working set.
    """
    import ppft as pp

    total, chunk = params["jobs"], params["chunk"]
    server = pp.Server(WORKERS)
    try:
        _warm_up(_ClassicBackend(server))
        pids = list(server._scheduler.pool.pids)
        start = _memory(pids)
        rates: list[float] = []
        after: list[dict[str, Any]] = []
        submit = server.submit
        for first in range(0, total, chunk):
            last = min(total, first + chunk)
            began = time.perf_counter()
            jobs = [submit(inc, (i,)) for i in range(first, last)]
            values = [job() for job in jobs]
            rates.append((last - first) / (time.perf_counter() - began))
            _check(values, list(range(first + 1, last + 1)), f"soak, jobs {first:,} to {last:,}")
            del jobs, values
            after.append(_memory(pids))
        pids_at_end = list(server._scheduler.pool.pids)
    finally:
        server.destroy()
    if pids_at_end != pids:
        raise BenchValueError(
            f"soak: the worker pids changed from {pids} to {pids_at_end} during {total:,} tiny jobs: a "
            "worker died or was replaced; the product is broken (see the worker logs)"
        )
    workers_after_first = after[0]["workers"]
    return {
        "jobs": total,
        "chunk": chunk,
        "rates": rates,
        "first_rate": rates[0],
        "last_rate": rates[-1],
        "rate_ratio": rates[-1] / rates[0],
        "memory_start": start,
        "memory_after_chunks": after,
        "client_growth_mb": after[-1]["client"] - after[0]["client"],
        "client_growth_from_start_mb": after[-1]["client"] - start["client"],
        # minus this function's own samples in between (a dict and a list each)
        "objects_growth": after[-1]["objects"] - after[0]["objects"] - 2 * (len(after) - 1),
        "worker_growth_mb": max(
            end - first for end, first in zip(after[-1]["workers"], workers_after_first, strict=True)
        ),
        "worker_growth_from_start_mb": max(
            end - first for end, first in zip(after[-1]["workers"], start["workers"], strict=True)
        ),
    }


def _wait_for_nodes(server: Any, count: int) -> None:
    """Until `count` ppservers are connected: jobs sent before then would all go to the first ones."""
    deadline = time.monotonic() + _CONNECT_TIMEOUT
    while len(server.get_active_nodes()) - 1 < count:  # minus "local"
        if time.monotonic() > deadline:
            raise BenchLoadError(
                f"only {len(server.get_active_nodes()) - 1} of {count} ppservers connected within "
                f"{_CONNECT_TIMEOUT:.0f} s: see the client log above"
            )
        time.sleep(0.01)  # polling the client's node table, bounded by the deadline


def scenario_fanout(backend: str, params: dict[str, Any]) -> dict[str, Any]:
    """Tiny throughput from one client over `remotes`, and the client's CPU time per job (all its threads:
    the submitting thread and the I/O thread), which is the scheduling cost the node count must not grow."""
    import ppft as pp

    remotes = tuple(params["remotes"])
    n = params["n"]
    args = [(i,) for i in range(n)]
    expected = list(range(1, n + 1))
    server = pp.Server(0, ppservers=remotes, secret=params["secret"])
    rates: list[float] = []
    cpu_us: list[float] = []
    try:
        _wait_for_nodes(server, len(remotes))
        b = _ClassicBackend(server)
        _warm_up(b)
        for _ in range(params["rounds"]):
            wall, cpu = time.perf_counter(), time.process_time()
            values = b.collect(b.submit_all(inc, args))
            rates.append(n / (time.perf_counter() - wall))
            cpu_us.append((time.process_time() - cpu) / n * 1e6)
            _check(values, expected, f"fan-out over {len(remotes)} ppservers")
        per_node = {name: stat.njobs for name, stat in server.get_stats().items() if name != "local"}
    finally:
        server.destroy()
    used = sorted(name for name, njobs in per_node.items() if njobs > 0)
    return {
        "nodes": len(remotes),
        "jobs_per_s": max(rates),
        "rounds": rates,
        "cpu_us_per_job": statistics.median(cpu_us),
        "cpu_us_rounds": cpu_us,
        "nodes_used": len(used),
        "share_used": len(used) / len(remotes),
        "jobs_per_node": per_node,
    }


def _round_trips(b: _ClassicBackend, k: int) -> list[tuple[float, float]]:
    """`k` sequential submit-then-result round trips: (seconds, time.monotonic() when it ended)."""
    samples = []
    for i in range(k):
        began = time.perf_counter()
        value = b.one(inc, i)
        samples.append((time.perf_counter() - began, time.monotonic()))
        if value != i + 1:
            raise BenchValueError(f"fairness round trip {i}: got {value!r}, expected {i + 1}")
    return samples


def _p99(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))]


def _await_line(proc: subprocess.Popen[str], expected: str, deadline: float) -> None:
    assert proc.stdout is not None
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise BenchLoadError(f"the flooding client did not say {expected!r} in time: see the log above")
        ready, _, _ = select.select([proc.stdout], [], [], remaining)
        if not ready:
            continue
        line = proc.stdout.readline()
        if not line:
            raise BenchLoadError(f"the flooding client exited (code {proc.wait(10)}) before {expected!r}")
        if line.strip() == expected:
            return


def scenario_fairness(backend: str, params: dict[str, Any]) -> dict[str, Any]:
    """Client B's round trips through one ppserver, idle, then while client A (another process, started
    here) has `flood` tiny jobs queued on the same ppserver. Only B's round trips that ended before A's
    last job was done count as loaded; the figure says how many did."""
    import ppft as pp

    k, flood_jobs = params["k"], params["flood"]
    b = _ClassicBackend(pp.Server(0, ppservers=(params["remote"],), secret=params["secret"]))
    flood: subprocess.Popen[str] | None = None
    try:
        _warm_up(b)
        idle = _round_trips(b, k)
        with tempfile.TemporaryDirectory(prefix="ppft-bench-flood-") as tmp:
            out_file = os.path.join(tmp, "flood.json")
            flood_params = {"remote": params["remote"], "secret": params["secret"], "n": flood_jobs}
            cmd = [
                sys.executable,
                os.path.abspath(__file__),
                backend,
                "flood",
                json.dumps(flood_params),
                out_file,
            ]
            flood = subprocess.Popen(  # same process group as this child: the harness's kill reaches it
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                text=True,
            )
            deadline = time.monotonic() + _FLOOD_TIMEOUT
            _await_line(flood, _SUBMITTED, deadline)
            loaded_all = _round_trips(b, k)
            code = flood.wait(max(0.1, deadline - time.monotonic()))
            if code != 0:
                raise BenchLoadError(f"the flooding client failed with exit code {code}: see the log above")
            with open(out_file, encoding="utf-8") as handle:
                a = json.load(handle)
    finally:
        if flood is not None and flood.poll() is None:
            flood.kill()
            flood.wait(10)
        b.close()
    loaded = [seconds for seconds, ended in loaded_all if ended <= a["drained"]]
    if not loaded:
        raise BenchLoadError(
            f"client A's {flood_jobs:,} jobs were all done before B's first round trip ended: queue more"
        )
    idle_s = [seconds for seconds, _ in idle]
    return {
        "k": k,
        "idle_median_us": statistics.median(idle_s) * 1e6,
        "idle_p99_us": _p99(idle_s) * 1e6,
        "loaded_median_us": statistics.median(loaded) * 1e6,
        "loaded_p99_us": _p99(loaded) * 1e6,
        "loaded_round_trips": len(loaded),
        "ratio": statistics.median(loaded) / statistics.median(idle_s),
        "flood": a,
    }


def scenario_flood(backend: str, params: dict[str, Any]) -> dict[str, Any]:
    """Client A of the fairness scenario: queue `n` tiny jobs at once, say so on stdout, wait for them."""
    import ppft as pp

    n = params["n"]
    server = pp.Server(0, ppservers=(params["remote"],), secret=params["secret"])
    try:
        _warm_up(_ClassicBackend(server))
        submit = server.submit
        began = time.monotonic()
        jobs = [submit(inc, (i,)) for i in range(n)]
        submitted = time.monotonic()
        sys.stdout.write(f"{_SUBMITTED}\n")
        sys.stdout.flush()
        server.wait()
        drained = time.monotonic()
        _check([job() for job in jobs], list(range(1, n + 1)), "the flooding client's jobs")
    finally:
        server.destroy()
    return {
        "n": n,
        "began": began,
        "submitted": submitted,
        "drained": drained,
        "jobs_per_s": n / (drained - began),
    }


_SCENARIOS = {
    "soak": scenario_soak,
    "fanout": scenario_fanout,
    "fairness": scenario_fairness,
    "flood": scenario_flood,
}


def main(argv: list[str]) -> int:
    if len(argv) != 4 or argv[1] not in _SCENARIOS:
        raise SystemExit(
            f"usage: child_load.py BACKEND {{{','.join(_SCENARIOS)}}} PARAMS_JSON OUT_FILE (got {argv!r})"
        )
    backend, scenario, params_json, out_file = argv
    if backend != "classic":
        raise SystemExit(f"child_load.py measures our ppft's Server only, not backend {backend!r}")
    result = _SCENARIOS[scenario](backend, json.loads(params_json))
    result["python"] = sys.version.split()[0]
    with open(out_file, "w", encoding="utf-8") as out:
        json.dump(result, out)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
