"""Issue 17's cost of being watched: tiny-job throughput with the status page open and /metrics scraped every
second, over the same without, on a ppserver (`--http`) and on a client (`Server.serve_status`).

Each pair runs one child unwatched and one watched, alternating (so a slow spell of the shared machine does
not fall on one side only), and each variant's best child counts. While a watched child runs, a thread of
this harness plays an open page and a Prometheus: GET /status.json and GET /metrics once a second each,
checking every answer. The ratio watched / unwatched is the figure (target: >= 0.97). Every ppserver it
starts is killed by its PID's process group when its block ends (procs.ppservers).
"""

from __future__ import annotations

import os
import tempfile
import threading
import urllib.request
from typing import TYPE_CHECKING, Any

from .impls import BenchSetupError
from .procs import Outcome, free_port, ppservers

if TYPE_CHECKING:
    from .runs import Run

__all__ = ["observe"]

_PAIRS_FULL, _PAIRS_QUICK = 3, 1
_JOBS_FULL, _JOBS_QUICK = 200_000, 200  # full: seconds of jobs, so that many scrapes fall in them


class _Watcher:
    """GET /status.json and /metrics once a second each, from a thread, until `stop()`; `url_of()` gives the
    page's address once it is known (a client's page is made by the child)."""

    def __init__(self, url_of: Any) -> None:
        self._url_of = url_of
        self._stop = threading.Event()
        self.scrapes = 0
        self.problem = ""
        self._thread = threading.Thread(target=self._run, name="bench-watcher", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        url = None
        while url is None and not self._stop.is_set():
            url = self._url_of()
            if url is None:
                self._stop.wait(0.05)
        while url is not None and not self._stop.wait(1.0):
            try:
                for path in ("status.json", "metrics"):
                    with urllib.request.urlopen(url + path, timeout=10) as response:
                        body = response.read()
                        if response.status != 200 or not body:
                            raise RuntimeError(f"{path} answered {response.status}")
                self.scrapes += 1
            except Exception as exc:  # noqa: BLE001 - reported with the figure
                self.problem = f"scraping {url} failed: {type(exc).__name__}: {exc}"

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(15)


def _remote_child(run: Run, watched: bool, n: int) -> Outcome:
    port = free_port()
    extra = ("--http", f"127.0.0.1:{port}") if watched else ()
    try:
        with ppservers(run.impls["ppft2"].ppserver_cmd, run.secret, 1, 2, extra) as addresses:
            watcher = _Watcher(lambda: f"http://127.0.0.1:{port}/") if watched else None
            try:
                params = {"n": n, "rounds": run.sizes.rounds, "remote": addresses[0], "secret": run.secret}
                outcome = run.child("observe", "ppft2", "ppft2-remote", "classic", params)
            finally:
                if watcher is not None:
                    watcher.stop()
    except BenchSetupError as exc:
        return Outcome("error", {}, 0.0, str(exc))
    return _checked(outcome, watcher)


def _client_child(run: Run, watched: bool, n: int) -> Outcome:
    with tempfile.TemporaryDirectory(prefix="ppft-bench-observe-") as tmp:
        url_file = os.path.join(tmp, "url")
        params: dict[str, Any] = {"n": n, "rounds": run.sizes.rounds}
        watcher = None
        if watched:
            params["status_file"] = url_file
            watcher = _Watcher(lambda: _read(url_file))
        try:
            outcome = run.child("observe", "ppft2", "ppft2", "classic", params)
        finally:
            if watcher is not None:
                watcher.stop()
    return _checked(outcome, watcher)


def _read(path: str) -> str | None:
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read().strip()
    except FileNotFoundError:
        return None
    return text or None


def _checked(outcome: Outcome, watcher: _Watcher | None) -> Outcome:
    """The child's outcome, failed if the page it was timed against did not answer."""
    if watcher is None or outcome.status != "ok":
        return outcome
    if watcher.problem:
        return Outcome("error", {}, outcome.seconds, watcher.problem)
    if not watcher.scrapes and outcome.seconds > 3.0:
        return Outcome("error", {}, outcome.seconds, "the status page was never scraped while the jobs ran")
    return outcome


def _best(outcomes: list[Outcome]) -> Outcome:
    good = [o for o in outcomes if o.status == "ok"]
    if not good:
        return outcomes[0]
    return max(good, key=lambda o: float(o.result["jobs_per_s"]))


def observe(run: Run) -> None:
    pairs = _PAIRS_QUICK if run.quick else _PAIRS_FULL
    n = _JOBS_QUICK if run.quick else _JOBS_FULL
    note = f"best of {pairs} children each, watched and unwatched alternating; {n:,} jobs"
    sides = [("ppft2", _client_child)]
    if run.available("ppft2", "ppserver"):
        sides.insert(0, ("ppft2-remote", _remote_child))
    else:
        why = run.impls["ppft2"].reason or "our ppserver cannot run"
        for metric in ("jobs/s, unwatched", "jobs/s, watched", "jobs/s, watched / unwatched"):
            run.skip("observe", metric, "ppft2-remote", "jobs/s" if "/ " not in metric else "", why)
    for label, child in sides:
        plain: list[Outcome] = []
        watched: list[Outcome] = []
        for _ in range(pairs):
            plain.append(child(run, False, n))
            watched.append(child(run, True, n))
        a, b = _best(plain), _best(watched)
        run.add("observe", "jobs/s, unwatched", label, "jobs/s", a, "jobs_per_s", note)
        run.add("observe", "jobs/s, watched", label, "jobs/s", b, "jobs_per_s", note)
        failed = next((o for o in (b, a) if o.status != "ok"), None)
        ratio = failed or Outcome("ok", {"v": b.result["jobs_per_s"] / a.result["jobs_per_s"]}, 0.0)
        run.add("observe", "jobs/s, watched / unwatched", label, "", ratio, "v", note)
