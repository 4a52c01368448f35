"""The web side's parts on their own: counters, the Prometheus text, where a page may listen, and the rules
every request of a real `StatusServer` (a real socket on 127.0.0.1) is held to."""

from __future__ import annotations

import http.client
import json
import threading
import time

import pytest
from prometheus_client.parser import text_string_to_metric_families

from ppft_worker.observe import (
    Counters,
    Durations,
    ExposureError,
    Rate,
    StatusServer,
    check_exposure,
    outcome_of,
    parse_http_address,
    render_metrics,
    webserver,
)

TOKEN = "a-token-of-enough-characters"


def _status(**changes: object) -> dict[str, object]:
    counters = Counters()
    counters.ended(5, 2)
    counters.tally.lost += 1
    counters.durations.add([0.00001, 0.02, 7.0], 7.02001)
    counters.refuse('wrong "secret"\nx', "refused connection from 10.0.0.1:5: wrong secret")
    status: dict[str, object] = {
        "kind": "ppserver", "name": 'node "a"\\b', "version": "2.0.0", "started": 1.5,
        "jobs": {**counters.tally.snapshot(), "queued": 3, "running": 1},
        "durations": counters.durations.snapshot(), "workers": [
            {"pid": 1, "state": "busy", "rss": 100}, {"pid": 2, "state": "idle", "rss": None}],
        "dialin": [{"workers": 4, "running": 1}], "clients": [{}, {}], "refused": dict(counters.refused),
        "worker_restarts": 2,
    }  # fmt: skip
    status.update(changes)
    return status


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def test_the_metrics_text_parses_and_says_what_the_status_says() -> None:
    samples = _samples(render_metrics(_status()))
    assert samples[("ppft_jobs_total", (("outcome", "ok"),))] == 5
    assert samples[("ppft_jobs_total", (("outcome", "error"),))] == 2
    assert samples[("ppft_jobs_total", (("outcome", "lost"),))] == 1
    assert samples[("ppft_jobs_total", (("outcome", "timeout"),))] == 0
    assert samples[("ppft_jobs_total", (("outcome", "cancelled"),))] == 0
    assert samples[("ppft_jobs_queued", ())] == 3
    assert samples[("ppft_workers", (("state", "busy"),))] == 2  # one local, one of the dial-in's four
    assert samples[("ppft_workers", (("state", "idle"),))] == 4
    assert samples[("ppft_clients", ())] == 2
    assert samples[("ppft_worker_restarts_total", ())] == 2
    assert samples[("ppft_connections_refused_total", (("reason", 'wrong "secret"\\nx'),))] == 1
    assert samples[("ppft_job_duration_seconds_bucket", (("le", "0.0001"),))] == 1
    assert samples[("ppft_job_duration_seconds_bucket", (("le", "0.05"),))] == 2
    assert samples[("ppft_job_duration_seconds_bucket", (("le", "+Inf"),))] == 3
    assert samples[("ppft_job_duration_seconds_count", ())] == 3
    assert samples[("ppft_info", (("kind", "ppserver"), ("name", 'node "a"\\b'), ("version", "2.0.0")))] == 1


def test_durations_sort_a_frame_that_straddles_buckets_job_by_job() -> None:
    d = Durations((0.001, 0.01, float("inf")))
    d.add((0.0001, 0.0002), 0.0003)  # one bucket: one add
    d.add((0.0005, 0.005, 0.5, 0.001), 0.5065)  # 0.001 is in the first bucket (le: inclusive)
    snap = d.snapshot()
    assert snap["counts"] == [4, 1, 1]
    assert snap["count"] == 6
    assert snap["bounds"] == [0.001, 0.01, None]
    assert snap["sum"] == pytest.approx(0.5068)


def test_the_rate_ring_gives_complete_seconds_with_zeros_for_quiet_ones(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from ppft_worker.observe import counters

    now = [1000.2]
    monkeypatch.setattr(counters, "_monotonic", lambda: now[0])
    rate = Rate(10)
    rate.add(5)
    rate.add(2)
    now[0] = 1001.5
    rate.add(1)
    now[0] = 1004.1  # 1002 and 1003 were quiet
    rate.add(7)
    assert rate.series(5) == [0, 7, 1, 0, 0]  # 999..1003: 1004 is still under way
    now[0] = 1030.0  # the whole ring went by
    assert rate.series() == [0] * 9


def test_outcomes_of_error_types() -> None:
    assert outcome_of("ppft_worker.errors.WorkerLostError") == "lost"
    assert outcome_of("ppft_client.errors.NodeLostError") == "lost"
    assert outcome_of("concurrent.futures.CancelledError") == "cancelled"
    assert outcome_of("ppft_worker.limits.JobTimeoutError") == "timeout"
    assert outcome_of("builtins.TimeoutError") == "error"  # the job's own TimeoutError: it raised
    assert outcome_of("builtins.ValueError") == "error"


def test_refusal_reasons_are_a_bounded_label_set() -> None:
    counters = Counters()
    for i in range(100):
        counters.refuse(f"reason {i}", f"line {i}")
    assert len(counters.refused) == 33
    assert counters.refused["other"] == 68
    assert len(counters.failures.snapshot()) == 50


@pytest.mark.parametrize(
    ("text", "expected"),
    [("8080", ("127.0.0.1", 8080)), ("0.0.0.0:0", ("0.0.0.0", 0)), ("[::1]:9", ("::1", 9)),
     ("localhost:80", ("localhost", 80))],
)  # fmt: skip
def test_http_addresses(text: str, expected: tuple[str, int]) -> None:
    assert parse_http_address(text) == expected


@pytest.mark.parametrize("text", ["", "http", "1.2.3.4:", ":80", "::1:80", "host:65536", "host:-1"])
def test_bad_http_addresses_are_refused_naming_the_option(text: str) -> None:
    with pytest.raises(ExposureError, match="--http"):
        parse_http_address(text)


def test_a_page_other_machines_can_reach_needs_a_token_or_public() -> None:
    for host in ("127.0.0.1", "127.3.4.5", "::1", "localhost"):
        check_exposure(host, None, False)
    with pytest.raises(ExposureError, match=r"--http-token TOKEN .* or --http-public"):
        check_exposure("0.0.0.0", None, False)
    with pytest.raises(ExposureError, match="needs token=TOKEN"):
        check_exposure("10.1.2.3", None, False, "serve_status address", ("token=TOKEN", "public=True"))
    check_exposure("0.0.0.0", TOKEN, False)
    check_exposure("0.0.0.0", None, True)
    with pytest.raises(ExposureError, match="at least 16 characters"):
        check_exposure("0.0.0.0", "short", False)


# -- a real server ------------------------------------------------------------------------------------


@pytest.fixture
def serve():  # type: ignore[no-untyped-def]
    pages: list[StatusServer] = []

    def start(snapshot=lambda: _status(), **options):  # type: ignore[no-untyped-def]
        page = StatusServer("127.0.0.1", 0, snapshot, **options)
        page.start()
        pages.append(page)
        return page

    yield start
    for page in pages:
        page.close()


def _get(page: StatusServer, path: str, method: str = "GET", headers: dict[str, str] | None = None):  # type: ignore[no-untyped-def]
    conn = http.client.HTTPConnection("127.0.0.1", page.port, timeout=10)
    try:
        conn.request(method, path, headers=headers or {})
        response = conn.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        conn.close()


def test_the_three_paths_and_their_headers(serve) -> None:  # type: ignore[no-untyped-def]
    page = serve()
    status, headers, body = _get(page, "/")
    assert status == 200 and body.startswith(b"<!DOCTYPE html>")
    assert "script-src 'sha256-" in headers["Content-Security-Policy"]
    assert headers["X-Content-Type-Options"] == "nosniff"
    status, headers, body = _get(page, "/status.json")
    assert status == 200 and headers["Content-Type"] == "application/json"
    assert json.loads(body)["jobs"]["ok"] == 5
    status, headers, body = _get(page, "/metrics")
    assert status == 200 and headers["Content-Type"].startswith("text/plain; version=0.0.4")
    assert _samples(body.decode())[("ppft_jobs_total", (("outcome", "ok"),))] == 5
    assert _get(page, "/nothing")[0] == 404
    assert _get(page, "/", "HEAD")[2] == b""


def test_it_is_read_only(serve) -> None:  # type: ignore[no-untyped-def]
    page = serve()
    for method in ("POST", "PUT", "DELETE", "PATCH", "OPTIONS"):
        status, headers, _ = _get(page, "/status.json", method)
        assert status == 405, method
        assert headers["Allow"] == "GET, HEAD"


def test_a_token_is_asked_of_every_request(serve) -> None:  # type: ignore[no-untyped-def]
    page = serve(token=TOKEN)
    for path in ("/", "/status.json", "/metrics", "/nothing"):
        status, headers, body = _get(page, path)
        assert status == 401, path
        assert b"needs its token" in body
        assert headers["WWW-Authenticate"].startswith("Bearer")
        assert _get(page, path, headers={"Authorization": "Bearer wrong-token-of-enough-chars"})[0] == 401
        assert _get(page, path + "?token=" + TOKEN[:-1])[0] == 401
    assert _get(page, "/metrics", headers={"Authorization": f"Bearer {TOKEN}"})[0] == 200
    assert _get(page, f"/status.json?token={TOKEN}")[0] == 200
    assert _get(page, f"/?token={TOKEN}")[0] == 200


def test_without_a_token_only_requests_to_an_address_or_localhost_are_answered(serve) -> None:  # type: ignore[no-untyped-def]
    page = serve()
    for host in ("127.0.0.1", f"127.0.0.1:{page.port}", "localhost:1", "[::1]:80"):
        assert _get(page, "/status.json", headers={"Host": host})[0] == 200, host
    status, _, body = _get(page, "/status.json", headers={"Host": f"evil.example:{page.port}"})
    assert status == 403
    assert b"IP address or localhost" in body
    assert _get(serve(public=True), "/status.json", headers={"Host": "node1.example"})[0] == 200


def test_a_failing_snapshot_answers_500_and_the_server_goes_on(serve) -> None:  # type: ignore[no-untyped-def]
    calls = []

    def snapshot() -> dict[str, object]:
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("boom")
        return _status()

    page = serve(snapshot)
    assert _get(page, "/status.json")[0] == 500
    deadline = time.monotonic() + 10
    while _get(page, "/status.json")[0] != 200:  # the next snapshot, once the failed one's moment passed
        assert time.monotonic() < deadline, "the status page did not recover from a failing snapshot"
    assert _get(page, "/metrics")[0] == 200


def test_snapshots_are_shared_by_requests_that_come_together(serve, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setattr(webserver, "CACHE_SECONDS", 600.0)
    calls = []
    page = serve(lambda: calls.append(1) or _status())
    threads = [threading.Thread(target=_get, args=(page, "/metrics")) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert len(calls) == 1
