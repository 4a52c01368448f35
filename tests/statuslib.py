"""Helpers for the status page tests: a ppserver with `--http`, and reading its page, JSON and metrics.

Imported by tests as `statuslib` (the root pyproject puts tests/ on the path)."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from clusterlib import Cluster, Proc, free_port, listening, wait_until

__all__ = ["fetch", "metrics", "ppserver_with_page", "status"]


def ppserver_with_page(cluster: Cluster, workers: int = 2, extra: tuple[str, ...] = ()) -> tuple[Proc, str]:
    """A ppserver serving its status page on 127.0.0.1: (the process, the page's URL)."""
    port = free_port()
    proc = cluster.ppserver(workers=workers, extra=("--http", f"127.0.0.1:{port}", *extra))
    wait_until(lambda: listening(port) or proc.popen.poll() is not None, 30, f"status page on {port}")
    assert proc.popen.poll() is None, cluster.read_log(proc)
    return proc, f"http://127.0.0.1:{port}/"


def fetch(url: str, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return int(response.status), bytes(response.read())
    except urllib.error.HTTPError as exc:
        return int(exc.code), bytes(exc.read())


def status(url: str) -> dict[str, Any]:
    code, body = fetch(url + "status.json")
    assert code == 200, body
    return dict(json.loads(body))


def metrics(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """/metrics parsed by prometheus_client's own parser: {(sample name, sorted labels): value}."""
    code, body = fetch(url + "metrics")
    assert code == 200, body
    out = {}
    for family in text_string_to_metric_families(body.decode("utf-8")):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out
