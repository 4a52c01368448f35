"""Issue 8's long and many-process scenarios, and the remote variants of payload and cpu.

soak (1,000,000 tiny jobs through one Server(2): memory growth, first vs last rate), fanout (one client over
1, 4 and 16 ppservers of one worker each, beside one ppserver of two), fairness (client B's round trips while
client A has 200,000 jobs queued on the same ppserver), and payload (sealed and unsealed) and cpu through
`ppserver -w 2` over loopback.
Our ppft only. Like scenarios.py it decides sizes and turns child outcomes into figures; it never measures
in its own process, and every ppserver it starts is killed by PID when its block ends (procs.ppservers).
scenarios.py imports it; both take their `Run` from runs.py.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .impls import BenchSetupError
from .procs import CHILD, LOAD_CHILD, Outcome, ppservers
from .runs import Run, size_name

__all__ = [
    "FULL_LOAD",
    "QUICK_LOAD",
    "LoadSizes",
    "cpu_remote",
    "fairness",
    "fanout",
    "payload_remote",
    "soak",
]

POOL_TIMED = "parallel efficiency, one job timed alone on a worker"
"""The cpu scenario's scaling figure: jobs * one job alone on the pool / (workers * wall) (child.py)."""


@dataclass(frozen=True)
class LoadSizes:
    """The sizes of these scenarios: QUICK_LOAD only checks values (the smoke test), FULL_LOAD is issue 8."""

    soak_jobs: int
    soak_chunk: int  # submitted, collected and dropped at a time: the client never holds every job
    fanout_nodes: tuple[int, ...]  # ppservers of one worker each; the last is "all nodes"
    fanout_jobs: int
    flood_jobs: int  # client A's queued jobs in the fairness scenario
    fairness_round_trips: int
    payload_pairs: int  # remote payload children, sealed then unsealed, alternating


FULL_LOAD = LoadSizes(
    soak_jobs=1_000_000,
    soak_chunk=100_000,
    fanout_nodes=(1, 4, 16),
    fanout_jobs=20_000,
    flood_jobs=200_000,
    fairness_round_trips=300,
    payload_pairs=3,
)
QUICK_LOAD = LoadSizes(
    soak_jobs=2_000,
    soak_chunk=1_000,
    fanout_nodes=(1, 2),
    fanout_jobs=200,
    # under a second of queue, yet B's first round trip ends before it drains, even on a loaded machine
    flood_jobs=50_000,
    fairness_round_trips=20,
    payload_pairs=1,
)


def _nodes(count: int) -> str:
    return "1 node" if count == 1 else f"{count} nodes"


def _sizes(run: Run) -> LoadSizes:
    return QUICK_LOAD if run.quick else FULL_LOAD


def _no_ppserver(run: Run) -> str:
    """Why our ppserver cannot run ("" when it can)."""
    if run.available("ppft2", "ppserver"):
        return ""
    return run.impls["ppft2"].reason or "ppft_server has no __main__ (python -m ppft_server) yet"


def _ratio(outcome: Outcome, ref: Outcome, key: str) -> Outcome:
    """`outcome.result[key] / ref.result[key]` as an outcome of its own, or the first failure of the two."""
    failed = next((o for o in (outcome, ref) if o.status != "ok"), None)
    return failed if failed is not None else Outcome("ok", {"v": outcome.result[key] / ref.result[key]}, 0.0)


def _on_remote(run: Run, scenario: str, params: dict[str, Any], script: str = CHILD) -> Outcome:
    """One child of `scenario` against a fresh `ppserver -w 2` on loopback, labelled ppft2-remote."""
    try:
        with ppservers(run.impls["ppft2"].ppserver_cmd, run.secret, 1, 2) as addresses:
            remote = {**params, "remote": addresses[0], "secret": run.secret}
            return run.child(scenario, "ppft2", "ppft2-remote", "classic", remote, script)
    except BenchSetupError as exc:
        return Outcome("error", {}, 0.0, str(exc))


_UNSEALED_NOTE = "unsealed: ppserver --allow-plain-loopback and Server(seal=False)"


def payload_remote(run: Run, params: dict[str, Any]) -> None:
    """The payload scenario's echo through ppserver -w 2, sealed (the default) and unsealed (a second
    `ppserver --allow-plain-loopback`, client `Server(seal=False)`), and what sealing costs: sealed MiB/s
    over unsealed MiB/s, per size. The two variants' children alternate, so a slow spell of the machine
    does not fall on one side only, and each variant's best child counts; every child checks that its link
    really is sealed, or unsealed, as labelled."""
    metrics = [f"echo {size_name(size)}" for size, _count in run.sizes.payloads]
    why = _no_ppserver(run)
    runs = {False: [], True: []} if why else _payload_pairs(run, params, _sizes(run).payload_pairs)
    best_of = f"best of {len(runs[False])} children, sealed and unsealed alternating"
    for unsealed, outcomes in runs.items():
        variant, note = (" unsealed", f"{_UNSEALED_NOTE}; {best_of}") if unsealed else ("", best_of)
        for (size, _count), metric in zip(run.sizes.payloads, metrics, strict=True):
            best = _best(outcomes, size) if outcomes else Outcome("skipped", {}, 0.0, why)
            run.add("payload", metric + variant, "ppft2-remote", "MiB/s", best, "mib_per_s", note)
    if run.quick:  # a goal's footnote, not a figure the smoke test could check
        return
    for (size, _count), metric in zip(run.sizes.payloads, metrics, strict=True):
        sealed, plain = (
            _best(runs[u], size) if runs[u] else Outcome("skipped", {}, 0.0, why) for u in (False, True)
        )
        ratio = _ratio(sealed, plain, "mib_per_s")
        run.add("payload", f"{metric}, sealed / unsealed", "ppft2-remote", "", ratio, "v", best_of)


def _payload_pairs(run: Run, params: dict[str, Any], pairs: int) -> dict[bool, list[Outcome]]:
    """`pairs` payload children through a sealed ppserver, each followed by one through an unsealed one
    (both up for the whole time), by whether the link was unsealed."""
    cmd = run.impls["ppft2"].ppserver_cmd
    runs: dict[bool, list[Outcome]] = {False: [], True: []}
    try:
        with (
            ppservers(cmd, run.secret, 1, 2) as sealed,
            ppservers(cmd, run.secret, 1, 2, ("--allow-plain-loopback",)) as plain,
        ):
            for _ in range(pairs):
                for unsealed, addresses in ((False, sealed), (True, plain)):
                    child = {**params, "remote": addresses[0], "secret": run.secret, "unsealed": unsealed}
                    runs[unsealed].append(run.child("payload", "ppft2", "ppft2-remote", "classic", child))
    except BenchSetupError as exc:
        for outcomes in runs.values():
            outcomes.append(Outcome("error", {}, 0.0, str(exc)))
    return runs


def _best(outcomes: list[Outcome], size: int) -> Outcome:
    """One size's figures of the child that moved it fastest, or the first failure: a failed child makes
    the figure fail, never a better-looking one of the others."""
    failed = next((o for o in outcomes if o.status != "ok"), None)
    if failed is not None:
        return _per_size(failed, size)
    return max((_per_size(o, size) for o in outcomes), key=lambda o: float(o.result["mib_per_s"]))


def _per_size(outcome: Outcome, size: int) -> Outcome:
    """The part of a payload child's outcome about one payload size."""
    return Outcome(outcome.status, outcome.result.get(str(size), {}), 0.0, outcome.message)


def cpu_remote(run: Run, params: dict[str, Any]) -> None:
    """The cpu scenario's jobs through ppserver -w 2: its parallel efficiency over its 2 workers."""
    why = _no_ppserver(run)
    outcome = Outcome("skipped", {}, 0.0, why) if why else _on_remote(run, "cpu", params)
    metric = f"parallel efficiency, {run.sizes.cpu_jobs} jobs"
    run.add("cpu", metric, "ppft2-remote", "", outcome, "efficiency")
    run.add("cpu", POOL_TIMED, "ppft2-remote", "", outcome, "efficiency_pool")


def soak(run: Run) -> None:
    sizes = _sizes(run)
    metrics = (
        ("jobs/s, first chunk", "jobs/s", "first_rate"),
        ("jobs/s, last chunk", "jobs/s", "last_rate"),
        ("jobs/s, last chunk / first chunk", "", "rate_ratio"),
        ("client RSS growth after the first chunk", "MB", "client_growth_mb"),
        ("client RSS growth from the start", "MB", "client_growth_from_start_mb"),
        ("client gc-tracked objects growth after the first chunk", "objects", "objects_growth"),
        ("worker RSS growth after the first chunk, largest", "MB", "worker_growth_mb"),
        ("worker RSS growth from the start, largest", "MB", "worker_growth_from_start_mb"),
    )
    if not run.available("ppft2"):
        for metric, unit, _ in metrics:
            run.skip("soak", metric, "ppft2", unit, run.impls["ppft2"].reason)
        return
    params = {"jobs": sizes.soak_jobs, "chunk": sizes.soak_chunk}
    outcome = run.child("soak", "ppft2", "ppft2", "classic", params, script=LOAD_CHILD)
    note = f"{sizes.soak_jobs:,} jobs through one Server(2), {sizes.soak_chunk:,} at a time"
    if outcome.status == "ok":
        start = outcome.result["memory_start"]
        note += f"; RSS after warm-up: client {start['client']:.0f} MB, workers " + ", ".join(
            f"{mb:.0f}" for mb in start["workers"]
        )
        note += " MB"
    for metric, unit, key in metrics:
        run.add("soak", metric, "ppft2", unit, outcome, key, note)


def fanout(run: Run) -> None:
    sizes = _sizes(run)
    nodes = sizes.fanout_nodes
    metrics = [
        ("jobs/s, 1 ppserver -w 2", "jobs/s"),
        *((f"jobs/s, {_nodes(count)}", "jobs/s") for count in nodes),
        *((f"client CPU per job, {_nodes(count)}", "us") for count in nodes),
        ("jobs/s, all nodes / 1 ppserver -w 2", ""),
        ("client CPU per job, all nodes / 1 node", ""),
        ("share of nodes that ran jobs, all nodes", ""),
    ]
    why = _no_ppserver(run)
    if why:
        for metric, unit in metrics:
            run.skip("fanout", metric, "ppft2-remote", unit, why)
        return
    params = {"n": sizes.fanout_jobs, "rounds": run.sizes.rounds, "secret": run.secret}
    cmd = run.impls["ppft2"].ppserver_cmd

    def child(addresses: list[str]) -> Outcome:
        return run.child(
            "fanout", "ppft2", "ppft2-remote", "classic", {**params, "remotes": addresses}, script=LOAD_CHILD
        )

    try:
        with ppservers(cmd, run.secret, 1, 2) as addresses:
            one = child(addresses)
    except BenchSetupError as exc:
        one = Outcome("error", {}, 0.0, str(exc))
    by_count: dict[int, Outcome] = {}
    try:
        with ppservers(cmd, run.secret, max(nodes), 1) as addresses:
            for count in nodes:
                by_count[count] = child(addresses[:count])
    except BenchSetupError as exc:
        by_count = {count: by_count.get(count, Outcome("error", {}, 0.0, str(exc))) for count in nodes}
    note = f"{sizes.fanout_jobs:,} jobs a round; a node is a `ppserver -w 1`"
    run.add("fanout", metrics[0][0], "ppft2-remote", "jobs/s", one, "jobs_per_s", note)
    for count in nodes:
        outcome = by_count[count]
        run.add("fanout", f"jobs/s, {_nodes(count)}", "ppft2-remote", "jobs/s", outcome, "jobs_per_s", note)
    for count in nodes:
        outcome = by_count[count]
        run.add(
            "fanout", f"client CPU per job, {_nodes(count)}", "ppft2-remote", "us", outcome, "cpu_us_per_job"
        )
    most, fewest = by_count[max(nodes)], by_count[min(nodes)]
    ratios = (
        ("jobs/s, all nodes / 1 ppserver -w 2", _ratio(most, one, "jobs_per_s")),
        ("client CPU per job, all nodes / 1 node", _ratio(most, fewest, "cpu_us_per_job")),
    )
    for metric, ratio in ratios:
        run.add("fanout", metric, "ppft2-remote", "", ratio, "v", f"all nodes = {max(nodes)}")
    used = "" if most.status != "ok" else f"{most.result['nodes_used']} of {max(nodes)} nodes ran jobs"
    run.add("fanout", metrics[-1][0], "ppft2-remote", "", most, "share_used", used)


def fairness(run: Run) -> None:
    sizes = _sizes(run)
    metrics = (
        ("B latency median, idle", "us", "idle_median_us"),
        ("B latency p99, idle", "us", "idle_p99_us"),
        ("B latency median, A's jobs queued", "us", "loaded_median_us"),
        ("B latency p99, A's jobs queued", "us", "loaded_p99_us"),
        ("B latency median, queued / idle", "", "ratio"),
    )
    why = _no_ppserver(run)
    if why:
        for metric, unit, _ in metrics:
            run.skip("fairness", metric, "ppft2-remote", unit, why)
        return
    params = {"k": sizes.fairness_round_trips, "flood": sizes.flood_jobs}
    outcome = _on_remote(run, "fairness", params, script=LOAD_CHILD)
    note = f"A queued {sizes.flood_jobs:,} jobs at once; B made {sizes.fairness_round_trips} round trips"
    if outcome.status == "ok":
        result = outcome.result
        note += (
            f", {result['loaded_round_trips']} of them before A's last job was done; A's jobs ran at "
            f"{result['flood']['jobs_per_s']:,.0f} jobs/s"
        )
    for metric, unit, key in metrics:
        run.add("fairness", metric, "ppft2-remote", unit, outcome, key, note)
