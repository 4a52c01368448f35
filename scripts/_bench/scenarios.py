"""Which implementation runs which scenario with which sizes, and the figures each child run turns into.

One scenario at a time, one implementation at a time, each in a fresh child process (procs.run_child), so
the figures of one run compare like with like on the 2-core machine. This module decides nothing about
how figures are shown (report.py) and never measures in its own process.
"""

from __future__ import annotations

import secrets
import statistics
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from .impls import BenchSetupError, Impl
from .load_scenarios import POOL_TIMED, cpu_remote, fairness, fanout, payload_remote, soak
from .procs import CHILD, Outcome, dask_cluster, ppserver, run_child
from .ssh_scenario import ssh

__all__ = ["FULL", "QUICK", "SCENARIOS", "Figure", "Run", "Sizes", "run_scenario"]

MIB = 1 << 20


@dataclass(frozen=True)
class Sizes:
    """Every size and timeout of one mode; QUICK only checks values, FULL is what the issues' tables ask."""

    startup_runs: int
    tiny_jobs: tuple[int, ...]
    rounds: int
    latency_round_trips: int
    cpu_jobs: int
    cpu_job_s: float
    payloads: tuple[tuple[int, int], ...]  # (bytes per job, jobs per round)
    executor_jobs: int
    remote_jobs: int
    ppft178_remote_jobs: int  # ppft 1.7.8 does ~45 jobs/s remotely: capped so its run stays under 20 s
    ppft178_remote_round_trips: int
    dask_jobs: int  # dask's own client does ~600 tiny jobs/s here: the same count for it and for ppft
    timeouts: dict[str, float]  # per child process, by scenario


FULL = Sizes(
    startup_runs=5,
    tiny_jobs=(5_000, 20_000),
    rounds=3,
    latency_round_trips=300,
    cpu_jobs=16,
    cpu_job_s=0.25,
    payloads=((MIB, 32), (16 * MIB, 4)),
    executor_jobs=20_000,
    remote_jobs=20_000,
    ppft178_remote_jobs=300,
    ppft178_remote_round_trips=50,
    dask_jobs=3_000,
    timeouts={
        "startup": 30.0,
        "tiny": 120.0,
        "latency": 60.0,
        "cpu": 60.0,
        "payload": 90.0,
        "executor": 120.0,
        "remote": 90.0,
        "ssh": 120.0,
        "dask": 120.0,
        "soak": 400.0,
        "fanout": 120.0,
        "fairness": 150.0,
    },
)
QUICK = Sizes(
    startup_runs=1,
    tiny_jobs=(200,),
    rounds=1,
    latency_round_trips=20,
    cpu_jobs=2,
    cpu_job_s=0.02,
    payloads=((64 * 1024, 4),),
    executor_jobs=200,
    remote_jobs=200,
    ppft178_remote_jobs=20,
    ppft178_remote_round_trips=5,
    dask_jobs=100,
    timeouts=dict.fromkeys(
        ("startup", "tiny", "latency", "cpu", "payload", "executor", "remote", "ssh", "dask"), 30.0
    )
    | dict.fromkeys(("soak", "fanout", "fairness"), 30.0),
)


@dataclass
class Figure:
    """One number of the run: `impl` keys are ppe, ppft2, ppft178, bare, bare-tcp, ppft2-remote, ...

    `value` is None when `status` is not "ok" (timeout, error, skipped); `note` then says why.
    """

    scenario: str
    metric: str
    impl: str
    value: float | None
    unit: str
    status: str = "ok"
    note: str = ""


@dataclass
class Run:
    """The state of one bench invocation: what can run, and everything measured so far."""

    sizes: Sizes
    impls: dict[str, Impl]
    figures: list[Figure] = field(default_factory=list)
    outcomes: dict[str, dict[str, Any]] = field(default_factory=dict)
    timed_out: set[tuple[str, str]] = field(default_factory=set)  # (impl, scenario or "*" in quick runs)
    busy: dict[str, float] = field(default_factory=dict)  # CPU share used by other processes, before/after
    secret: str = field(default_factory=lambda: secrets.token_hex(16))

    @property
    def quick(self) -> bool:
        return self.sizes is QUICK

    def available(self, key: str, feature: str = "Server") -> bool:
        impl = self.impls.get(key)
        return impl is not None and impl.available and impl.features.get(feature, True)

    def child(
        self,
        scenario: str,
        impl_key: str,
        label: str,
        backend: str,
        params: dict[str, Any],
        script: str = CHILD,
    ) -> Outcome:
        """Run one child for `label` (an impl key, maybe with a variant), remembering its raw outcome.

        After a timeout, the same implementation is not run again in that scenario (in a quick run: at all),
        so a hanging implementation costs one timeout, not one per run.
        """
        hang = (impl_key, "*" if self.quick else scenario)
        if hang in self.timed_out:
            outcome = Outcome("skipped", {}, 0.0, f"{impl_key} timed out earlier in this run")
        else:
            timeout = self.sizes.timeouts[scenario]
            outcome = run_child(self.impls[impl_key].python, backend, scenario, params, timeout, script)
        if outcome.status == "timeout":
            self.timed_out.add(hang)
        self.outcomes.setdefault(scenario, {}).setdefault(label, []).append(asdict(outcome))
        return outcome

    def add(
        self,
        scenario: str,
        metric: str,
        impl: str,
        unit: str,
        outcome: Outcome,
        key: str | None,
        note: str = "",
    ) -> None:
        """Record `outcome.result[key]` as a figure, or the outcome's failure with its message."""
        value = outcome.result.get(key) if key and outcome.status == "ok" else None
        message = outcome.message if outcome.status != "ok" else note
        self.figures.append(Figure(scenario, metric, impl, value, unit, outcome.status, message))

    def skip(self, scenario: str, metric: str, impl: str, unit: str, why: str) -> None:
        self.figures.append(Figure(scenario, metric, impl, None, unit, "skipped", why))


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
            run.add("payload", f"echo {_size_name(size)}", key, "MiB/s", per_size, "mib_per_s")
    payload_remote(run, params)


def _size_name(size: int) -> str:
    return f"{size // MIB} MiB" if size >= MIB else f"{size // 1024} KiB"


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


def _remote_figures(run: Run, label: str, outcome: Outcome, params: dict[str, Any]) -> None:
    note = f"{params['n']:,} jobs, {params['k']} round trips"
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
    servers = [("ppft2", local)] if ours else []
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
    "executor": executor,
    "remote": remote,
    "ssh": ssh,
    "dask": dask,
    "fanout": fanout,
    "fairness": fairness,
    "soak": soak,  # the longest (1,000,000 jobs), last
}


def run_scenario(run: Run, name: str) -> None:
    SCENARIOS[name](run)
