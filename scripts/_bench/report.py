"""Turning a run's figures into the tables people read, the issues' goals, and the JSON file machines read.

Every ratio is `value / reference value` from the same run (for ms and us, lower is better). This module
never measures and never judges a quick run's timings: at quick sizes the figures mean nothing.
"""

from __future__ import annotations

import operator
import os
import platform
import sys
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Any

from .runs import Figure, Run

__all__ = ["GOALS", "Goal", "evaluate_goals", "render", "to_json"]

_TITLES = {
    "startup": "startup: construct + first trivial result (median of fresh processes)",
    "tiny": "tiny throughput: N `x + 1` jobs submitted one by one, then all collected, 2 workers",
    "latency": "latency: sequential submit-then-result round trips, 2 workers",
    "cpu": "cpu-bound: pure-Python jobs of ~0.25 s on 2 workers; efficiency = jobs * one job / (2 * wall), "
    "one job timed in the bench process, or alone on the pool",
    "payload": "payload: echo bytes; MiB/s counts each job's payload once (it travels both ways)",
    "arrays": "arrays: echo a numpy float64 array (out-of-band buffers); MiB/s counts each job's array once",
    "executor": "executor: ppft.Executor(2) vs ProcessPoolExecutor(2), x + 1 jobs",
    "remote": "remote: ppserver -w 2 over loopback, client Server(0, ppservers=...); beside local runs",
    "dask": "dask: scheduler + 2 workers --nthreads 1 on loopback; ppft's dask node vs dask's own client",
    "ssh": "ssh: an ssh:// node (workers=2, through a local sshd) vs ppserver -w 2, same loopback, client "
    "Server(0, ppservers=...); ppserver sealed by default, the ssh node unsealed by default (ssh encrypts)",
    "fanout": "fan-out: one client, Server(0, ppservers=...) over N `ppserver -w 1` on loopback, x + 1 jobs",
    "fairness": "fairness: client B's round trips through ppserver -w 2, idle, then while client A has its "
    "jobs queued there",
    "recycle": "recycle: Server(2, max_jobs_per_worker=1000) (ppft2-recycle) vs no recycling, tiny and 1 ms "
    "jobs; ProcessPoolExecutor(2) without recycling as the reference",
    "soak": "soak: tiny jobs through one Server(2) in chunks (each submitted, collected, dropped); RSS in MB",
    "observe": "observe: tiny x + 1 jobs with the status page open and /metrics scraped every second, over "
    "the same unwatched; ppserver -w 2 --http (client Server(0, ppservers=...)), Server(2).serve_status()",
    "put": "put: Server.put() of a 64 MiB numpy array, then 1,000 jobs reading it, over the same jobs with a "
    "tiny argument (once a first job used the ref); Server(2) and ppserver -w 2 (client Server(0, ...))",
}
_DEFAULT_REFS = (("x ppe", "ppe"), ("x ppft178", "ppft178"))
_REFS = {
    "tiny": (*_DEFAULT_REFS, ("x bare", "bare")),
    "remote": (("x ppe local", "ppe"), ("x ppft178 remote", "ppft178-remote"), ("x ppft2 local", "ppft2")),
    "dask": (("x dask client", "dask"),),
    "ssh": (("x ppserver sealed", "ppft2-remote"), ("x ppserver unsealed", "ppft2-remote unsealed")),
    "payload": (*_DEFAULT_REFS, ("x ppft2 local", "ppft2")),
    "arrays": (("x ppe", "ppe"), ("x ppft2 local", "ppft2")),
    "cpu": (*_DEFAULT_REFS, ("x ppft2 local", "ppft2")),
    "recycle": (("x ppe", "ppe"), ("x ppft2 no recycling", "ppft2")),
}
_BUSY = 0.1  # share of the CPUs used by others above which a run's figures are flagged
_OPS = {">=": operator.ge, "<=": operator.le}


@dataclass(frozen=True)
class Goal:
    """A target of issue 3, 4, 7 or 8: `impl`'s figure over `ref`'s (the figure itself when ref is None)."""

    issue: str
    scenario: str
    metric: str
    impl: str
    ref: str | None
    op: str
    target: float | None  # None: reported, not judged


GOALS = (
    Goal("3, 8", "startup", "construct + first result", "ppft2", "ppe", "<=", 1.0),
    Goal("3", "tiny", "jobs/s, 5,000 jobs", "ppft2", "ppe", ">=", 2.0),
    Goal("8", "tiny", "jobs/s, 20,000 jobs", "ppft2", "ppe", ">=", 5.0),
    Goal("8", "tiny", "jobs/s, 20,000 jobs", "ppft2", "bare", ">=", None),
    Goal("3", "latency", "median", "ppft2", "ppe", "<=", 1.0),
    Goal("8", "latency", "median", "ppft2", "ppe", "<=", 0.8),
    Goal("3", "latency", "p99", "ppft2", "ppe", "<=", 1.0),
    Goal("3, 8", "cpu", "parallel efficiency, 16 jobs", "ppft2", None, ">=", 0.95),
    Goal("3, 8", "cpu", "parallel efficiency, one job timed alone on a worker", "ppft2", None, ">=", None),
    Goal("3, 8", "payload", "echo 1 MiB", "ppft2", "ppe", ">=", 1.0),
    Goal("3, 8", "payload", "echo 16 MiB", "ppft2", "ppe", ">=", 1.0),
    Goal("19", "arrays", "echo 16 MiB numpy", "ppft2", "ppe", ">=", 2.0),
    Goal("19", "arrays", "echo 16 MiB numpy", "ppft2-remote", "ppe", ">=", 1.0),
    Goal("8", "executor", "map, default chunksize, 20,000 jobs", "ppft2", "ppe", ">=", 5.0),
    Goal("8", "executor", "submit then collect, 20,000 jobs", "ppft2", "ppe", ">=", 5.0),
    Goal("4", "remote", "tiny jobs/s", "ppft2-remote", "ppft178-remote", ">=", 50.0),
    Goal("4", "remote", "tiny jobs/s", "ppft2-remote", "ppft2", ">=", 0.5),
    Goal("8", "remote", "tiny jobs/s", "ppft2-remote", "ppft2", ">=", 0.8),
    Goal("8", "remote", "latency median", "ppft2-remote", "ppe", "<=", 0.8),
    Goal("7", "dask", "tiny jobs/s", "ppft2-dask", "dask", ">=", 0.8),
    Goal("7", "dask", "latency median", "ppft2-dask", "dask", "<=", None),
    Goal("8", "cpu", "parallel efficiency, 16 jobs", "ppft2-remote", None, ">=", 0.95),
    Goal(
        "8", "cpu", "parallel efficiency, one job timed alone on a worker", "ppft2-remote", None, ">=", None
    ),
    Goal("8", "payload", "echo 1 MiB", "ppft2-remote", "ppe", ">=", 1.0),
    Goal("8", "payload", "echo 16 MiB", "ppft2-remote", "ppe", ">=", 1.0),
    Goal("8", "payload", "echo 1 MiB, sealed / unsealed", "ppft2-remote", None, ">=", 0.5),
    Goal("8", "payload", "echo 16 MiB, sealed / unsealed", "ppft2-remote", None, ">=", 0.5),
    Goal("8", "soak", "client RSS growth after the first chunk", "ppft2", None, "<=", 50.0),
    Goal("8", "soak", "client RSS growth from the start", "ppft2", None, "<=", None),
    Goal("8", "soak", "worker RSS growth after the first chunk, largest", "ppft2", None, "<=", 50.0),
    Goal("8", "soak", "worker RSS growth from the start, largest", "ppft2", None, "<=", 50.0),
    Goal("8", "soak", "jobs/s, last chunk / first chunk", "ppft2", None, ">=", 0.9),
    Goal("8", "fanout", "share of nodes that ran jobs, all nodes", "ppft2-remote", None, ">=", 1.0),
    Goal("8", "fanout", "jobs/s, all nodes / 1 ppserver -w 2", "ppft2-remote", None, ">=", 0.5),
    Goal("8", "fanout", "client CPU per job, all nodes / 1 node", "ppft2-remote", None, "<=", 1.25),
    Goal("8", "fairness", "B latency median, queued / idle", "ppft2-remote", None, "<=", 3.0),
    Goal("17", "observe", "jobs/s, watched / unwatched", "ppft2-remote", None, ">=", 0.97),
    Goal("17", "observe", "jobs/s, watched / unwatched", "ppft2", None, ">=", 0.97),
    Goal("16", "recycle", "jobs/s, 20,000 tiny jobs", "ppft2-recycle", "ppft2", ">=", 0.95),
    Goal("16", "recycle", "jobs/s, 4,000 jobs of 1 ms", "ppft2-recycle", "ppft2", ">=", 0.95),
    Goal("19", "remote", "latency median", "ppft2-remote", "ppe", "<=", 1.0),
    Goal("19", "put", "bytes received by the ppserver / object size", "ppft2-remote", None, "<=", 1.1),
    Goal("19", "put", "1,000 jobs reading a ref / with a tiny argument", "ppft2-remote", None, "<=", 1.2),
    Goal("19", "put", "1,000 jobs reading a ref / with a tiny argument", "ppft2", None, "<=", 1.2),
)


def _find(figures: Iterable[Figure], scenario: str, metric: str, impl: str) -> float | None:
    for fig in figures:
        if fig.scenario == scenario and fig.metric == metric and fig.impl == impl and fig.status == "ok":
            return fig.value
    return None


def _ratio(value: float | None, ref: float | None) -> float | None:
    return None if value is None or not ref else value / ref


def _fmt_value(value: float | None, unit: str) -> str:
    if value is None:
        return "-"
    if unit in ("jobs/s", "us", "MiB/s", "objects"):
        return f"{value:,.0f}"
    if unit == "ms":
        return f"{value:,.1f}"
    return f"{value:.3f}"


def _fmt_ratio(ratio: float | None) -> str:
    if ratio is None:
        return "-"
    return f"{ratio:.2f}" if ratio < 10 else f"{ratio:.1f}" if ratio < 100 else f"{ratio:,.0f}"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(header, widths, strict=True)).rstrip()]
    lines.append("  ".join("-" * width for width in widths))
    lines.extend(
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip() for row in rows
    )
    return lines


def _scenario_lines(scenario: str, figures: list[Figure]) -> list[str]:
    refs = [
        (title, ref)
        for title, ref in _REFS.get(scenario, _DEFAULT_REFS)
        if any(f.impl == ref for f in figures)
    ]
    rows = []
    for fig in figures:
        shown = _fmt_value(fig.value, fig.unit) if fig.status == "ok" else fig.status
        row = [fig.metric, fig.impl, shown, fig.unit]
        row += [_fmt_ratio(_ratio(fig.value, _find(figures, scenario, fig.metric, ref))) for _, ref in refs]
        rows.append(row)
    lines = [f"== {_TITLES[scenario]}"]
    lines += _table(["metric", "impl", "value", "unit", *(title for title, _ in refs)], rows)
    notes = [
        f"   {f.impl}: " + ("" if f.status == "ok" else f"{f.status}: ") + f.note for f in figures if f.note
    ]
    return lines + list(dict.fromkeys(notes))


def _headline_lines(figures: list[Figure]) -> list[str]:
    impls = list(dict.fromkeys(f.impl for f in figures if f.impl != "ppe"))
    metrics = list(dict.fromkeys((f.scenario, f.metric) for f in figures))
    rows = []
    for scenario, metric in metrics:
        ref = _find(figures, scenario, metric, "ppe")
        if ref is None:
            continue
        cells = [_fmt_ratio(_ratio(_find(figures, scenario, metric, impl), ref)) for impl in impls]
        rows.append([f"{scenario}: {metric}", *cells])
    if not rows:
        return []
    lines = ["== headline: ratio to ProcessPoolExecutor(2) in this run (ms/us: lower is better)"]
    return lines + _table(["figure", *impls], rows)


def evaluate_goals(figures: list[Figure]) -> list[dict[str, Any]]:
    """Each goal with its measured ratio and whether it is met ("not measured" when a figure is missing)."""
    out = []
    for goal in GOALS:
        value = _find(figures, goal.scenario, goal.metric, goal.impl)
        measured = (
            value if goal.ref is None else _ratio(value, _find(figures, goal.scenario, goal.metric, goal.ref))
        )
        if measured is None:
            verdict = "not measured"
        elif goal.target is None:
            verdict = "reported"
        else:
            verdict = "met" if _OPS[goal.op](measured, goal.target) else "NOT met"
        out.append({**asdict(goal), "measured": measured, "verdict": verdict})
    return out


def _goal_lines(goals: list[dict[str, Any]]) -> list[str]:
    rows = []
    for goal in goals:
        what = f"{goal['scenario']}: {goal['metric']}: {goal['impl']}" + (
            f" / {goal['ref']}" if goal["ref"] else ""
        )
        target = "-" if goal["target"] is None else f"{goal['op']} {goal['target']:g}"
        rows.append([goal["issue"], what, _fmt_ratio(goal["measured"]), target, goal["verdict"]])
    return [
        "== goals of issues 3, 4, 7 and 8 (ppft2)",
        *_table(["issue", "figure", "measured", "goal", "verdict"], rows),
    ]


def render(run: Run, scenarios: list[str]) -> str:
    """The whole human report: one table per scenario, the headline ratios and, in a full run, the goals."""
    lines = []
    for when, share in run.busy.items():
        if share > _BUSY:
            lines.append(
                f"WARNING: other processes used {share:.0%} of the CPUs {when} this run: the figures are "
                "skewed (see `ps aux --sort=-%cpu`)"
            )
    for key, impl in run.impls.items():
        state = f"version {impl.version}" if impl.available else f"NOT MEASURED: {impl.reason}"
        if impl.available or key.startswith("ppft"):
            lines.append(f"{key:8} {state}")
    for scenario in scenarios:
        figures = [f for f in run.figures if f.scenario == scenario]
        if figures:
            lines += ["", *_scenario_lines(scenario, figures)]
    if run.quick:
        lines += ["", "--quick: values were checked; at these sizes the timings mean nothing."]
        return "\n".join(lines)
    lines += ["", *_headline_lines(run.figures), "", *_goal_lines(evaluate_goals(run.figures))]
    return "\n".join(lines)


def to_json(run: Run, scenarios: list[str], seconds: float) -> dict[str, Any]:
    """Every raw figure, each child's raw output, what was measured with what, and the goals."""
    return {
        "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "mode": "quick" if run.quick else "full",
        "scenarios": scenarios,
        "seconds": seconds,
        "machine": {
            "cpus": os.cpu_count(),
            "affinity": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
            "platform": platform.platform(),
            "python": sys.version.split()[0],
            "busy_by_others": run.busy,
        },
        "implementations": {key: asdict(impl) for key, impl in run.impls.items()},
        "sizes": asdict(run.sizes),
        "figures": [asdict(fig) for fig in run.figures],
        "goals": [] if run.quick else evaluate_goals(run.figures),
        "outcomes": run.outcomes,
    }
