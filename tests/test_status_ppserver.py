"""ppserver --http: its /metrics (parsed by prometheus_client) and /status.json count the jobs a user's script
really ran, every way they ended; and the rules of who may read the page, from the command line up."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from clusterlib import SECRET, Cluster, free_port, listening, wait_until
from scriptlib import run_script
from statuslib import fetch, metrics, ppserver_with_page, status

TOKEN = "status-page-token-0123456789"


@pytest.fixture
def cluster(tmp_path: Path):  # type: ignore[no-untyped-def]
    c = Cluster(tmp_path)
    yield c
    c.close()


def _outcome(samples: dict, outcome: str) -> float:  # type: ignore[type-arg]
    return samples[("ppft_jobs_total", (("outcome", outcome),))]


def test_metrics_count_the_jobs_a_script_ran_every_way_they_ended(cluster: Cluster) -> None:
    # every job through the ppserver's pool: a direct worker that a job kills takes the counts it had not
    # reported yet with it (docs/cluster.md, "Direct worker links"), and direct links are up within ms
    server, url = ppserver_with_page(cluster, extra=("--direct-workers", "0"))
    before = metrics(url)
    assert all(_outcome(before, o) == 0 for o in ("ok", "error", "lost", "timeout", "cancelled"))
    idle, starting = (before[("ppft_workers", (("state", state),))] for state in ("idle", "starting"))
    assert idle + starting == 2
    out = run_script("status_outcomes.py", env={"PPSERVER": server.address}).check().stdout.splitlines()
    assert out[:3] == [str(sum(i * i for i in range(200))), "7", "WorkerLostError"]
    # the client's own status says the same
    assert json.loads(out[3]) == {"ok": 200, "error": 7, "lost": 1, "timeout": 0, "cancelled": 0}
    assert out[4] == "208 0 0"  # 208 results' run times; no local workers on that client
    assert json.loads(out[5]) == [[server.address, "ready", 208]]
    # a snapshot serves the requests of a quarter of a second: wait for one taken after the client left
    wait_until(lambda: metrics(url)[("ppft_clients", ())] == 0 and _outcome(metrics(url), "ok") > 0, 15,
               "the client to be gone")  # fmt: skip
    after = metrics(url)
    assert _outcome(after, "ok") == 200
    assert _outcome(after, "error") == 7
    assert _outcome(after, "lost") == 1
    assert _outcome(after, "timeout") == 0
    assert _outcome(after, "cancelled") == 0
    assert after[("ppft_worker_restarts_total", ())] == 3  # the job that kills its worker, tried 3 times
    assert after[("ppft_job_duration_seconds_count", ())] == 208
    assert after[("ppft_job_duration_seconds_bucket", (("le", "+Inf"),))] == 208
    assert after[("ppft_jobs_queued", ())] == 0
    snapshot = status(url)
    assert snapshot["kind"] == "ppserver"
    assert snapshot["jobs"]["ok"] == 200
    assert len(snapshot["workers"]) == 2
    assert {w["state"] for w in snapshot["workers"]} <= {"idle", "starting"}  # replacements: 0 jobs yet
    deaths = [f for f in snapshot["failures"] if f["kind"] == "worker died"]
    assert len(deaths) == 3 and "exited with code 3" in deaths[0]["text"]
    wait_until(lambda: sum(status(url)["rate"]["last"]) == 208, 10, "the jobs' second to be complete")


def test_a_client_that_leaves_has_its_jobs_counted_cancelled(cluster: Cluster, tmp_path: Path) -> None:
    server, url = ppserver_with_page(cluster)
    script = tmp_path / "leaves.py"
    script.write_text(
        "import json, sys, time, urllib.request\n"
        "import ppft as pp\n"
        f"job_server = pp.Server(0, ppservers=({server.address!r},))\n"
        "jobs = [job_server.submit(time.sleep, (60,), modules=('time',)) for _ in range(2)]\n"
        "deadline = time.monotonic() + 30\n"
        "while json.load(urllib.request.urlopen(sys.argv[1] + 'status.json'))['jobs']['running'] < 2:\n"
        "    assert time.monotonic() < deadline\n"
        "    time.sleep(0.05)\n"
        "print('running')\n"
        "job_server.destroy()\n"
    )
    proc = subprocess.run([sys.executable, str(script), url], capture_output=True, text=True, timeout=90,
                          env={**os.environ, "PPFT_SECRET": SECRET}, check=False)  # fmt: skip
    assert proc.stdout == "running\n", proc.stderr
    wait_until(lambda: _outcome(metrics(url), "cancelled") == 2, 15, "the two running jobs to be stopped")
    samples = metrics(url)
    assert _outcome(samples, "ok") == _outcome(samples, "error") == _outcome(samples, "lost") == 0
    assert samples[("ppft_worker_restarts_total", ())] == 2  # both workers were stopped and replaced
    assert [f["kind"] for f in status(url)["failures"]] == ["worker died", "worker died"]


def test_a_wrong_secret_is_counted_as_refused(cluster: Cluster, tmp_path: Path) -> None:
    server, url = ppserver_with_page(cluster)
    script = tmp_path / "wrong.py"
    script.write_text(
        "import ppft as pp\n"
        f"s = pp.Server(0, ppservers=({server.address!r},), secret='not the secret')\n"
        "import time\n"
        "deadline = time.monotonic() + 30\n"
        "while [n['state'] for n in s.status()['nodes']] != ['down']:\n"
        "    assert time.monotonic() < deadline\n"
        "    time.sleep(0.05)\n"
        "print(s.status()['nodes'][0]['reason'])\n"
        "s.destroy()\n"
    )
    done = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("wrong secret"), done.stdout
    wait_until(lambda: status(url)["refused"], 10, "the refusal to be counted")
    snapshot = status(url)
    assert list(snapshot["refused"]) == ["wrong secret"], snapshot["refused"]
    assert snapshot["failures"][0]["kind"] == "refused"
    assert "127.0.0.1" in snapshot["failures"][0]["text"]
    assert metrics(url)[("ppft_connections_refused_total", (("reason", "wrong secret"),))] >= 1


def _ppserver_exits(*flags: str) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, "-m", "ppft_server", "-p", str(free_port()), "-i", "127.0.0.1", "-w", "1",
            "-s", SECRET, *flags]  # fmt: skip
    return subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (("--http", "0.0.0.0:8080"), "needs --http-token TOKEN"),
        (("--http", "[::]:8080"), "needs --http-token TOKEN"),
        (("--http", "0.0.0.0:8080", "--http-token", "short"), "at least 16 characters"),
        (("--http", "8080:x"), "is not a port number"),
        (("--http-public",), "go with --http [HOST:]PORT"),
        (("--http", "1", "--http-token", TOKEN, "--http-token-file", "/x"), "give the status page token"),
    ],
)
def test_ppserver_refuses_a_page_others_could_read_without_a_token(
    flags: tuple[str, ...], message: str
) -> None:
    done = _ppserver_exits(*flags)
    assert done.returncode == 2, done.stderr
    assert message in done.stderr
    assert done.stderr.startswith("ppserver: error: ")


def test_a_status_page_port_in_use_is_a_clear_error(cluster: Cluster) -> None:
    _, url = ppserver_with_page(cluster)
    port = url.rsplit(":", 1)[1].strip("/")
    done = _ppserver_exits("--http", port)
    assert done.returncode == 1
    assert f"cannot serve the status page on 127.0.0.1:{port}" in done.stderr


def test_a_page_on_every_interface_with_a_token_asks_every_request_for_it(cluster: Cluster) -> None:
    port = free_port()
    cluster.ppserver(workers=1, extra=("--http", f"0.0.0.0:{port}", "--http-token", TOKEN))
    wait_until(lambda: listening(port), 30, "the status page")
    base = f"http://127.0.0.1:{port}/"
    for path in ("", "status.json", "metrics"):
        code, body = fetch(base + path)
        assert code == 401 and b"needs its token" in body
        assert fetch(base + path, {"Authorization": "Bearer " + TOKEN[::-1]})[0] == 401
        assert fetch(base + path, {"Authorization": "Bearer " + TOKEN})[0] == 200
    assert fetch(base + "status.json?token=" + TOKEN)[0] == 200


def test_a_public_page_answers_anyone(cluster: Cluster) -> None:
    port = free_port()
    cluster.ppserver(workers=1, extra=("--http", f"0.0.0.0:{port}", "--http-public"))
    wait_until(lambda: listening(port), 30, "the status page")
    assert fetch(f"http://127.0.0.1:{port}/status.json", {"Host": f"node1.example:{port}"})[0] == 200


def test_the_page_shows_no_secret_source_or_argument(cluster: Cluster, tmp_path: Path) -> None:
    server, url = ppserver_with_page(cluster)
    script = tmp_path / "markers.py"
    script.write_text(
        "import json, sys, time, urllib.request\n"
        "import ppft as pp\n"
        "def holds_markers(text, seconds):\n"
        "    # SOURCE-MARKER-7f3a: a comment of the function's source\n"
        "    import time\n"
        "    time.sleep(seconds)\n"
        "    return len(text)\n"
        f"job_server = pp.Server(0, ppservers=({server.address!r},))\n"
        "job = job_server.submit(holds_markers, ('ARGUMENT-MARKER-19bd', 3.0))\n"
        "deadline = time.monotonic() + 30\n"
        "while json.load(urllib.request.urlopen(sys.argv[1] + 'status.json'))['jobs']['running'] < 1:\n"
        "    assert time.monotonic() < deadline\n"
        "    time.sleep(0.05)\n"
        "paths = ('', 'status.json', 'metrics')\n"
        "pages = [urllib.request.urlopen(sys.argv[1] + p).read().decode() for p in paths]\n"
        "print(json.dumps(pages))\n"
        "print(job())\n"
    )
    env = {**os.environ, "PPFT_SECRET": SECRET}
    done = subprocess.run([sys.executable, str(script), url], capture_output=True, text=True, timeout=90,
                          env=env, check=False)  # fmt: skip
    assert done.returncode == 0, done.stderr
    pages = json.loads(done.stdout.splitlines()[0])
    assert done.stdout.splitlines()[1] == "20"
    text = "\n".join(pages)
    for marker in ("SOURCE-MARKER-7f3a", "ARGUMENT-MARKER-19bd", SECRET, "time.sleep(seconds)"):
        assert marker not in text, marker
    assert "holds_markers" in pages[1]  # the function's name is what the page shows of it


def test_the_page_from_the_config_file_with_a_token_file(cluster: Cluster, tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    token_file.chmod(0o600)
    port = free_port()
    config = tmp_path / "ppserver.cfg"
    config.write_text(f"[network]\nhttp = 127.0.0.1:{port}\n[general]\nhttp_token_file = {token_file}\n")
    cluster.ppserver(workers=1, extra=("-c", str(config)))
    wait_until(lambda: listening(port), 30, "the status page")
    base = f"http://127.0.0.1:{port}/"
    assert fetch(base + "metrics")[0] == 401
    assert fetch(base + "metrics", {"Authorization": "Bearer " + TOKEN})[0] == 200
