"""The command line of scripts/bench: parse arguments, find the implementations, run scenarios, report.

Exit code 0 when every run of ppe, the bare pipeline and our ppft gave checked values; 1 when one of them
failed or timed out (ppft 1.7.8 failing is a finding reported in the tables, not a failure of the run);
2 for bad arguments. It must never leave a process behind: SIGTERM becomes SystemExit so every `finally`
that kills a started process group runs.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import time
from types import FrameType

from .impls import Impl, probe_dask, probe_ppft2, probe_ppft178
from .report import render, to_json
from .runs import FULL, QUICK, Run
from .scenarios import SCENARIOS, run_scenario

__all__ = ["main"]

_MUST_PASS = ("ppe", "ppft2", "bare", "bare-tcp", "ppft2-remote", "ppft2-dask", "ppft2-ssh")


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="scripts/bench",
        description="Benchmarks of ppft against ProcessPoolExecutor(2), ppft 1.7.8 and the bare pipeline, "
        "each implementation in a fresh process, ratios from the same run.",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="tiny sizes, ppe/ppft2/bare only, checks values and never times (the test suite's smoke test)",
    )
    parser.add_argument("--only", default="", help=f"comma-separated scenarios out of: {','.join(SCENARIOS)}")
    parser.add_argument("--json", metavar="FILE", help="also write every raw figure to FILE")
    parser.add_argument(
        "--no-ppft178", action="store_true", help="leave ppft 1.7.8 out (and do not create its venv)"
    )
    args = parser.parse_args(argv)
    chosen = [name.strip() for name in args.only.split(",") if name.strip()] or list(SCENARIOS)
    unknown = [name for name in chosen if name not in SCENARIOS]
    if unknown:
        parser.error(f"unknown scenario(s) {','.join(unknown)}: choose from {','.join(SCENARIOS)}")
    args.scenarios = [name for name in SCENARIOS if name in chosen]
    return args


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)


def _implementations(quick: bool, without_ppft178: bool) -> dict[str, Impl]:
    ours = sys.executable
    impls = {
        "ppe": Impl("ppe", ours, True, version=sys.version.split()[0]),
        "ppft2": probe_ppft2(),
        "bare": Impl("bare", ours, True, version="scripts/bare_pipeline.py"),
        "bare-tcp": Impl("bare-tcp", ours, True, version="scripts/bare_pipeline.py --tcp"),
        "dask": probe_dask(),
    }
    if quick or without_ppft178:
        why = "--quick leaves it out" if quick else "--no-ppft178"
        impls["ppft178"] = Impl("ppft178", "", False, reason=why)
    else:
        impls["ppft178"] = probe_ppft178(create=True)
    return impls


def _cpu_busy(window: float = 0.5) -> float:
    """Share of all CPUs' time used by other processes during `window` seconds while this one sleeps.

    A busy machine skews every figure, most of all the ratios between runs made at different moments.
    """

    def sample() -> tuple[int, int]:
        with open("/proc/stat", encoding="ascii") as stat:
            ticks = [int(field) for field in stat.readline().split()[1:9]]
        return sum(ticks), ticks[3] + ticks[4]  # total, idle + iowait

    total0, idle0 = sample()
    time.sleep(window)  # the measuring window itself, not a synchronisation
    total1, idle1 = sample()
    return 1.0 - (idle1 - idle0) / max(1, total1 - total0)


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    signal.signal(signal.SIGTERM, _on_sigterm)
    start = time.perf_counter()
    run = Run(QUICK if args.quick else FULL, _implementations(args.quick, args.no_ppft178))
    if not run.quick:
        run.busy["before"] = _cpu_busy()
    for name in args.scenarios:
        print(f"bench: {name}...", file=sys.stderr, flush=True)
        run_scenario(run, name)
    if not run.quick:
        run.busy["after"] = _cpu_busy()
    print(render(run, args.scenarios))
    seconds = time.perf_counter() - start
    if args.json:
        with open(args.json, "w", encoding="utf-8") as out:
            json.dump(to_json(run, args.scenarios, seconds), out, indent=1)
    failed = [f for f in run.figures if f.impl in _MUST_PASS and f.status in ("error", "timeout")]
    print(f"\nbench: {len(run.figures)} figures in {seconds:.0f} s, {len(failed)} failed.")
    return 1 if failed else 0
