"""What one bench invocation carries: the sizes of its mode (FULL, QUICK), and the `Run` collecting figures.

Scenario modules (scenarios.py, load_scenarios.py) import this one; it imports none of them, and never
measures in its own process (`Run.child` runs a fresh child process per measurement, procs.run_child).
"""

from __future__ import annotations

import secrets
from dataclasses import asdict, dataclass, field
from typing import Any

from .impls import Impl
from .procs import CHILD, Outcome, run_child

__all__ = ["FULL", "MIB", "QUICK", "Figure", "Run", "Sizes", "size_name"]

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
    ppft178_remote_jobs: int  # ppft 1.7.8 is slow remotely (its own remote figure): capped to a short run
    ppft178_remote_round_trips: int
    dask_jobs: int  # dask's own client is slow with tiny jobs: a count it finishes soon, the same for ppft
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
        "arrays": 90.0,
        "executor": 120.0,
        "remote": 90.0,
        "dask": 120.0,
        "soak": 400.0,
        "recycle": 120.0,
        "fanout": 120.0,
        "fairness": 150.0,
        "observe": 180.0,
        "ssh": 120.0,
        "put": 180.0,
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
        ("startup", "tiny", "latency", "cpu", "payload", "arrays", "executor", "remote", "ssh", "dask"),
        30.0,
    )
    | dict.fromkeys(("soak", "fanout", "fairness", "recycle", "observe"), 30.0)
    | {"put": 60.0},
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


def size_name(size: int) -> str:
    """How a payload size is named in figures: "64 KiB", "16 MiB"."""
    return f"{size // MIB} MiB" if size >= MIB else f"{size // 1024} KiB"
