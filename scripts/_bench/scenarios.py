"""Which implementation runs which scenario with which sizes, and the figures each child run turns into.

One scenario at a time, one implementation at a time, each in a fresh child process (procs.run_child), so
the figures of one run compare like with like on the 2-core machine. This module decides nothing about
how figures are shown (report.py) and never measures in its own process.
"""

from __future__ import annotations

import importlib.util
import statistics
import time
from collections.abc import Callable
from typing import Any

from .child import spin
from .impls import BenchSetupError
from .load_scenarios import (
    POOL_TIMED,
    _no_ppserver,
    _on_remote,
    _per_size,
    cpu_remote,
    fairness,
    fanout,
    payload_remote,
    soak,
)
from .observe_scenario import observe
from .procs import Outcome, dask_cluster, ppserver
from .put_scenario import put
from .runs import MIB, Run, size_name
from .ssh_scenario import ssh

__all__ = ["SCENARIOS", "run_scenario"]


def _classic_impls(run: Run) -> list[str]:
    return [key for key in ("ppe", "ppft2", "ppft178") if run.available(key)]


def _backend(key: str) -> str:
    return "ppe" if key == "ppe" else "classic"


def startup(run: Run) -> None:
    for key in _classic_impls(run):
        outcomes = [run.child("startup", key, key, _backend(key), {}) for _ in range(run.sizes.startup_runs)]
        good = [o for o in outcomes if o.status == "ok"]
        if len(good) < len(outcomes):
            failed = next(o for o in outcomes if o.status != "ok")
            for metric in ("construct + first result", "import"):
                run.add("startup", metric, key, "ms", failed, None)
            continue
        for metric, name in (("construct + first result", "startup_s"), ("import", "import_s")):
            median = statistics.median(o.result[name] for o in good) * 1e3
            run.add("startup", metric, key, "ms", Outcome("ok", {"v": median}, 0.0), "v")


def tiny(run: Run) -> None:
    keys = [*_classic_impls(run), "bare", "bare-tcp"]
    for n in run.sizes.tiny_jobs:
        for key in keys:
            backend = key if key.startswith("bare") else _backend(key)
            outcome = run.child("tiny", key, key, backend, {"n": n, "rounds": run.sizes.rounds})
            run.add("tiny", f"jobs/s, {n:,} jobs", key, "jobs/s", outcome, "jobs_per_s")


def latency(run: Run) -> None:
    for key in _classic_impls(run):
        outcome = run.child("latency", key, key, _backend(key), {"k": run.sizes.latency_round_trips})
        run.add("latency", "median", key, "us", outcome, "median_us")
        run.add("latency", "p99", key, "us", outcome, "p99_us")


def cpu(run: Run) -> None:
    params = {"jobs": run.sizes.cpu_jobs, "job_s": run.sizes.cpu_job_s, "rounds": run.sizes.rounds}
    for key in _classic_impls(run):
        outcome = run.child("cpu", key, key, _backend(key), params)
        run.add("cpu", f"parallel efficiency, {run.sizes.cpu_jobs} jobs", key, "", outcome, "efficiency")
        run.add("cpu", POOL_TIMED, key, "", outcome, "efficiency_pool")
    cpu_remote(run, params)


def payload(run: Run) -> None:
    params = {"sizes": [list(pair) for pair in run.sizes.payloads], "rounds": run.sizes.rounds}
    for key in _classic_impls(run):
        outcome = run.child("payload", key, key, _backend(key), params)
        for size, _count in run.sizes.payloads:
            per_size = Outcome(outcome.status, outcome.result.get(str(size), {}), 0.0, outcome.message)
            run.add("payload", f"echo {size_name(size)}", key, "MiB/s", per_size, "mib_per_s")
    payload_remote(run, params)


def arrays(run: Run) -> None:
    """Issue 19: a numpy array echoed (it travels with out-of-band buffers), local and through a sealed
    ppserver -w 2, beside ProcessPoolExecutor."""
    size, count = (16 * MIB, 4) if not run.quick else (256 * 1024, 2)
    metric = f"echo {size_name(size)} numpy"
    params = {"sizes": [[size, count]], "rounds": run.sizes.rounds, "numpy": True}
    if importlib.util.find_spec("numpy") is None:
        for key in ("ppe", "ppft2", "ppft2-remote"):
            run.skip("arrays", metric, key, "MiB/s", "numpy is not installed (scripts/install --test)")
        return
    for key in ("ppe", "ppft2"):
        outcome = run.child("payload", key, key, _backend(key), params)
        run.add("arrays", metric, key, "MiB/s", _per_size(outcome, size), "mib_per_s")
    why = _no_ppserver(run)
    remote = Outcome("skipped", {}, 0.0, why) if why else _on_remote(run, "payload", params)
    run.add("arrays", metric, "ppft2-remote", "MiB/s", _per_size(remote, size), "mib_per_s", "sealed")


def executor(run: Run) -> None:
    metrics = (("map, default chunksize", "map_jobs_per_s"), ("submit then collect", "submit_jobs_per_s"))
    if not run.available("ppft2", "Executor"):
        why = run.impls["ppft2"].reason or "our ppft has no Executor yet"
        for metric, _ in metrics:
            run.skip("executor", f"{metric}, {run.sizes.executor_jobs:,} jobs", "ppft2", "jobs/s", why)
        return
    params = {"n": run.sizes.executor_jobs, "rounds": run.sizes.rounds}
    for key, backend in (("ppe", "ppe"), ("ppft2", "executor")):
        outcome = run.child("executor", key, key, backend, params)
        for metric, name in metrics:
            run.add("executor", f"{metric}, {run.sizes.executor_jobs:,} jobs", key, "jobs/s", outcome, name)


def calibrate_spin(seconds: float) -> int:
    """The `spin` argument that takes about `seconds` here: the best of three probes (a busy machine slows
    some of them)."""
    best = float("inf")
    for _ in range(3):
        start = time.perf_counter()
        spin(100_000)
        best = min(best, time.perf_counter() - start)
    return max(100, int(100_000 * seconds / best))


def recycle(run: Run) -> None:
    """Recycling (`max_jobs_per_worker`, issue 16): the same jobs with workers replaced every N jobs or
    never, each beside ProcessPoolExecutor without recycling."""
    n = run.sizes.executor_jobs
    most = 1000 if n >= 1000 else 50  # a quick run recycles too
    params = {"n": n, "spin_jobs": max(20, n // 5), "job_s": 0.001, "rounds": run.sizes.rounds}
    params["loop_n"] = calibrate_spin(params["job_s"])  # once: the same jobs in every child, comparable
    runs = [("ppe", "ppe", "ppe", None), ("ppft2", "ppft2", "classic", None)]
    runs.append(("ppft2", "ppft2-recycle", "classic", most))
    for key, label, backend, limit in runs:
        if not run.available(key):
            continue
        outcome = run.child("recycle", key, label, backend, {**params, "max_jobs": limit})
        run.add("recycle", f"jobs/s, {n:,} tiny jobs", label, "jobs/s", outcome, "tiny_jobs_per_s")
        spin_metric = f"jobs/s, {params['spin_jobs']:,} jobs of 1 ms"
        run.add("recycle", spin_metric, label, "jobs/s", outcome, "spin_jobs_per_s")


def _remote_figures(run: Run, label: str, outcome: Outcome, params: dict[str, Any]) -> None:
    note = f"{params['n']:,} jobs, {params['k']} round trips"
    if params.get("sealed"):
        note += ", link sealed (checked)"
    run.add("remote", "tiny jobs/s", label, "jobs/s", outcome, "jobs_per_s", note)
    run.add("remote", "latency median", label, "us", outcome, "median_us", note)
    run.add("remote", "latency p99", label, "us", outcome, "p99_us", note)


def _skip_remote(run: Run, label: str, why: str) -> None:
    for metric, unit in (("tiny jobs/s", "jobs/s"), ("latency median", "us"), ("latency p99", "us")):
        run.skip("remote", metric, label, unit, why)


def remote(run: Run) -> None:
    """ppserver -w 2 on loopback, client Server(0, ppservers=...), beside local runs of the same sizes."""
    sizes = run.sizes
    ours = run.available("ppft2", "ppserver")
    theirs = not run.quick and run.available("ppft178", "ppserver")
    local = {"n": sizes.remote_jobs, "k": sizes.latency_round_trips, "rounds": sizes.rounds}
    for key in ("ppe", "ppft2") if ours else ("ppe",) if theirs else ():
        _remote_figures(run, key, run.child("remote", key, key, _backend(key), local), local)
    servers = [("ppft2", {**local, "sealed": True})] if ours else []  # the child checks it is sealed
    if theirs:
        capped = {"n": sizes.ppft178_remote_jobs, "k": sizes.ppft178_remote_round_trips, "rounds": 1}
        servers.append(("ppft178", capped))
    for key, params in servers:
        label = f"{key}-remote"
        try:
            with ppserver(run.impls[key].ppserver_cmd, run.secret) as address:
                outcome = run.child(
                    "remote", key, label, "classic", {**params, "remote": address, "secret": run.secret}
                )
        except BenchSetupError as exc:
            outcome = Outcome("error", {}, 0.0, str(exc))
        _remote_figures(run, label, outcome, params)
    if not ours:
        why = run.impls["ppft2"].reason or "ppft_server has no __main__ (python -m ppft_server) yet"
        _skip_remote(run, "ppft2-remote", why)


def dask(run: Run) -> None:
    """dask scheduler + 2 workers (--nthreads 1) on loopback: ppft's dask node, Server(0,
    ppservers=("dask://...",)), against dask's own Client.submit/gather on the same cluster, in turn."""
    metrics = (("tiny jobs/s", "jobs/s", "jobs_per_s"), ("latency median", "us", "median_us"),
               ("latency p99", "us", "p99_us"))  # fmt: skip
    labels = ("dask", "ppft2-dask")
    why = ""
    if not run.available("ppft2"):
        why = run.impls["ppft2"].reason or "our ppft is not importable"
    elif not run.available("dask"):
        why = run.impls["dask"].reason if "dask" in run.impls else "dask.distributed is not installed"
    if why:
        for label in labels:
            for metric, unit, _ in metrics:
                run.skip("dask", metric, label, unit, why)
        return
    sizes = run.sizes
    params = {"n": sizes.dask_jobs, "k": sizes.latency_round_trips, "rounds": sizes.rounds}
    note = f"{params['n']:,} jobs, {params['k']} round trips"
    try:
        with dask_cluster(run.impls["ppft2"].python) as address:
            outcomes = {
                "dask": run.child("dask", "dask", "dask", "dask", {**params, "scheduler": address}),
                "ppft2-dask": run.child(
                    "dask", "ppft2", "ppft2-dask", "classic",
                    {**params, "remote": "dask://" + address.split("://", 1)[1], "secret": run.secret},
                ),
            }  # fmt: skip
    except BenchSetupError as exc:
        outcomes = dict.fromkeys(labels, Outcome("error", {}, 0.0, str(exc)))
    for label in labels:
        for metric, unit, key in metrics:
            run.add("dask", metric, label, unit, outcomes[label], key, note)


SCENARIOS: dict[str, Callable[[Run], None]] = {
    "startup": startup,
    "tiny": tiny,
    "latency": latency,
    "cpu": cpu,
    "payload": payload,
    "arrays": arrays,
    "executor": executor,
    "remote": remote,
    "dask": dask,
    "fanout": fanout,
    "fairness": fairness,
    "recycle": recycle,
    "observe": observe,
    "ssh": ssh,
    "put": put,
    "soak": soak,  # the longest (1,000,000 jobs), last
}


def run_scenario(run: Run, name: str) -> None:
    SCENARIOS[name](run)
