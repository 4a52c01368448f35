"""A client's own `status()` from a user's script, on local workers and on a real ppserver: how every job
ended, its workers, its nodes; and the rules of `serve_status`."""

from __future__ import annotations

import json
import urllib.request

import pytest

import ppft as pp
from scriptlib import run_script
from statuslib import fetch, status


def test_status_counts_how_a_scripts_jobs_ended(script_mode: dict[str, str]) -> None:
    out = run_script("status_outcomes.py", env=script_mode).check().stdout.splitlines()
    assert out[:3] == [str(sum(i * i for i in range(200))), "7", "WorkerLostError"]
    assert json.loads(out[3]) == {"ok": 200, "error": 7, "lost": 1, "timeout": 0, "cancelled": 0}
    nodes = json.loads(out[5])
    if "PPSERVER" in script_mode:
        assert out[4] == "208 0 0"
        assert nodes == [[script_mode["PPSERVER"], "ready", 208]]
    else:  # the job that kills its worker ran on this client's own workers, 3 times (the last replacement
        # may not have been started yet when the job's failure arrived)
        assert out[4] in ("208 2 3", "208 1 3")
        assert nodes == []


def test_cancelled_jobs_are_counted_cancelled() -> None:
    with pp.Server(1) as job_server:
        blocker = job_server.submit(pow, (2, 10))
        queued = [job_server.submit(abs, (-i,)) for i in range(50)]
        cancelled = sum(job.cancel() for job in queued)
        job_server.wait()
        jobs = job_server.status()["jobs"]
        assert blocker() == 1024
        assert jobs["cancelled"] == cancelled
        assert jobs["ok"] == 51 - cancelled


def test_serve_status_refuses_an_open_address_without_a_token_or_public() -> None:
    with pp.Server(1) as job_server:
        with pytest.raises(ValueError, match=r"needs token=TOKEN .* or public=True"):
            job_server.serve_status("0.0.0.0:0")
        with pytest.raises(ValueError, match="is not a port number"):
            job_server.serve_status("127.0.0.1:http")
        url = job_server.serve_status("127.0.0.1:0")
        assert job_server.serve_status() == url  # one page per Server
        with pytest.raises(ValueError, match="already serves its status page"):
            job_server.serve_status("127.0.0.2:0")
        assert status(url)["kind"] == "client"
    with pytest.raises(OSError):  # destroy() stopped it
        urllib.request.urlopen(url + "status.json", timeout=5)


def test_serve_status_with_a_token_on_every_address() -> None:
    token = "client-page-token-0123456789"
    with pp.Server(1) as job_server:
        url = job_server.serve_status("0.0.0.0:0", token=token)
        assert url.startswith("http://0.0.0.0:")
        local = url.replace("0.0.0.0", "127.0.0.1")
        assert fetch(local + "status.json")[0] == 401
        assert fetch(local + "status.json?token=" + token)[0] == 200
