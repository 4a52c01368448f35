"""The web side of ppft: a live status page, `/status.json` and `/metrics`, shared by ppserver and the client.

    owner's I/O thread --adds to--> Counters (plain ints, a per-second ring, a histogram, a bounded deque)
    StatusServer thread --snapshot() of the owner's view (ppft_server.status, ppft_client.status)-->
        "/" page.html | "/status.json" | "/metrics" (metrics.render_metrics)

- `counters`: what the owner's thread counts, once per result frame, without locks.
- `poolview`: the local workers as rows, read from the pool's own records.
- `exposure`: where a page may listen and who may read it (loopback by default; a token or an explicit
  public flag otherwise).
- `webserver`: the HTTP server thread (stdlib `http.server`): read-only, token checked in constant time,
  snapshots cached a quarter of a second.
- `metrics`: the Prometheus text format, written here (see the package README for why).

The owner builds its own snapshot (what a ppserver or a client knows is theirs); this room never imports
the client or the server, and nothing here runs on the job path but the `Counters` adds.
"""

from __future__ import annotations

from .counters import DURATION_BOUNDS, OUTCOMES, Counters, Durations, Failures, JobTally, Rate, outcome_of
from .exposure import (
    DEFAULT_HTTP_HOST,
    ExposureError,
    check_exposure,
    is_loopback_host,
    page_link,
    parse_http_address,
)
from .metrics import CONTENT_TYPE, render_metrics
from .poolview import rss_bytes, worker_rows
from .webserver import StatusServer, page_html

__all__ = [
    "CONTENT_TYPE",
    "DEFAULT_HTTP_HOST",
    "DURATION_BOUNDS",
    "OUTCOMES",
    "Counters",
    "Durations",
    "ExposureError",
    "Failures",
    "JobTally",
    "Rate",
    "StatusServer",
    "check_exposure",
    "is_loopback_host",
    "outcome_of",
    "page_html",
    "page_link",
    "parse_http_address",
    "render_metrics",
    "rss_bytes",
    "worker_rows",
]
