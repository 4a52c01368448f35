"""`/metrics`: a status snapshot (`status.json`'s dict) in the Prometheus text exposition format, 0.0.4.

    snapshot dict --render_metrics--> "# HELP ...\n# TYPE ...\nppft_jobs_total{outcome="ok"} 42\n..."

Written here rather than with `prometheus-client`: the format is a few lines of well-specified text, the
metrics are computed from the one snapshot the page and `/status.json` show (so the three never disagree),
and a compute node that installs ppft-worker alone gets no new dependency for a feature it may never use.
Label values are escaped as the format says (backslash, double quote, newline); names are ours, never a
peer's. The tests parse the output with `prometheus_client.parser`.

This module only formats: it reads nothing but the snapshot it is given.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

from .counters import OUTCOMES

__all__ = ["CONTENT_TYPE", "render_metrics"]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def _escape_label(value: object) -> str:
    return str(value).replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _escape_help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def _number(value: float) -> str:
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, int):
        return str(value)
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value))


class _Writer:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def family(self, name: str, kind: str, help_text: str) -> None:
        self.lines.append(f"# HELP {name} {_escape_help(help_text)}")
        self.lines.append(f"# TYPE {name} {kind}")

    def sample(self, name: str, value: float, labels: Mapping[str, object] | None = None) -> None:
        if labels:
            inside = ",".join(f'{key}="{_escape_label(val)}"' for key, val in labels.items())
            self.lines.append(f"{name}{{{inside}}} {_number(value)}")
        else:
            self.lines.append(f"{name} {_number(value)}")

    def one(self, name: str, kind: str, help_text: str, value: float) -> None:
        self.family(name, kind, help_text)
        self.sample(name, value)

    def labelled(
        self, name: str, kind: str, help_text: str, label: str, values: Iterable[tuple[object, float]]
    ) -> None:
        self.family(name, kind, help_text)
        for key, value in values:
            self.sample(name, value, {label: key})

    def text(self) -> str:
        return "\n".join(self.lines) + "\n"


def render_metrics(status: Mapping[str, Any]) -> str:
    """The Prometheus text of a status snapshot (the dict a ppserver's or a client's `status()` gives)."""
    w = _Writer()
    kind = status.get("kind", "")
    w.family("ppft_info", "gauge", "This ppft process: always 1, its facts in the labels.")
    w.sample(
        "ppft_info", 1, {"kind": kind, "name": status.get("name", ""), "version": status.get("version", "")}
    )
    w.one("ppft_start_time_seconds", "gauge", "When this ppserver or client started (Unix time).",
          status.get("started", 0.0))  # fmt: skip
    jobs = status.get("jobs", {})
    w.labelled(
        "ppft_jobs_total", "counter",
        "Jobs ended since start, by outcome: ok (returned), error (raised), lost (with its worker or node, "
        "after the retries), timeout (stopped at its time limit), cancelled (before it ran, or its client "
        "left).",
        "outcome", [(outcome, jobs.get(outcome, 0)) for outcome in OUTCOMES],
    )  # fmt: skip
    w.one("ppft_jobs_queued", "gauge", "Jobs waiting for a worker.", jobs.get("queued", 0))
    w.one(
        "ppft_jobs_running",
        "gauge",
        "Jobs sent to a worker or node and not answered yet.",
        jobs.get("running", 0),
    )
    workers = status.get("workers", [])
    states = {"busy": 0, "idle": 0, "starting": 0}
    for worker in workers:
        states[worker.get("state", "idle")] = states.get(worker.get("state", "idle"), 0) + 1
    for link in status.get("dialin", []):
        busy = min(link.get("running", 0), link.get("workers", 0))
        states["busy"] += busy
        states["idle"] += link.get("workers", 0) - busy
    w.labelled("ppft_workers", "gauge",
               "Worker processes: local ones by their state; dial-in workers busy as far as their jobs in "
               "flight fill them.", "state", states.items())  # fmt: skip
    w.one("ppft_worker_restarts_total", "counter", "Local worker processes replaced after they died or were "
          "killed.", status.get("worker_restarts", 0))  # fmt: skip
    shared = status.get("shared_segments")
    if shared is not None:
        w.one("ppft_shared_segments", "gauge", "Shared memory segments this process holds open for its local "
              "workers' jobs (large arguments).", shared["open"])  # fmt: skip
        w.one("ppft_shared_segments_bytes", "gauge", "Bytes of those segments.", shared["bytes"])
    rss = [worker["rss"] for worker in workers if worker.get("rss") is not None]
    w.one(
        "ppft_workers_rss_bytes", "gauge", "Resident memory of the local worker processes, summed.", sum(rss)
    )
    if kind == "ppserver":
        refs = status.get("refs", {})
        w.one("ppft_refs", "gauge", "Objects held for clients' put().", refs.get("count", 0))
        w.one("ppft_refs_bytes", "gauge", "Bytes of the objects held for put().", refs.get("bytes", 0))
        w.one("ppft_refs_refused_total", "counter", "put() objects refused (over --refs-memory, or short of "
              "memory).", refs.get("refused", 0))  # fmt: skip
        w.one("ppft_clients", "gauge", "Clients connected (authenticated).", len(status.get("clients", [])))
        w.one(
            "ppft_dialin_connections", "gauge", "Dial-in worker connections.", len(status.get("dialin", []))
        )
        direct = status.get("direct", {})
        w.one("ppft_direct_workers", "gauge", "Direct workers running (each serves one client's connection; "
              "their jobs are in ppft_jobs_total once reported).", direct.get("running", 0))  # fmt: skip
    else:
        nodes = status.get("nodes", [])
        counts: dict[str, int] = {"ready": 0, "connecting": 0, "down": 0, "closed": 0}
        for node in nodes:
            counts[node.get("state", "down")] = counts.get(node.get("state", "down"), 0) + 1
        w.labelled("ppft_nodes", "gauge", "Remote nodes of this client, by state.", "state", counts.items())
    refused = status.get("refused", {})
    w.labelled("ppft_connections_refused_total", "counter",
               "Connections refused or dropped before or at their handshake, by reason.", "reason",
               sorted(refused.items()))  # fmt: skip
    durations = status.get("durations")
    if durations:
        name = "ppft_job_duration_seconds"
        w.family(name, "histogram", "Run time of jobs on their worker (seconds).")
        cumulative = 0
        for bound, count in zip(durations["bounds"], durations["counts"], strict=True):
            cumulative += count
            w.sample(f"{name}_bucket", cumulative, {"le": "+Inf" if bound is None else _number(float(bound))})
        w.sample(f"{name}_sum", durations["sum"])
        w.sample(f"{name}_count", cumulative)
    return w.text()
