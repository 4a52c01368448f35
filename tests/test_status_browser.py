"""The status page in a real browser (headless chromium): it loads with no console error, shows the right
workers, its numbers move while jobs run, and a hostile function name stays text; on a ppserver and on a
client's own page (`serve_status`), with the client's page naming its ppserver."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import browserlib
from browserlib import card, console_errors, text_of, wait_for
from clusterlib import SECRET, Cluster, tied_to_this_process
from statuslib import ppserver_with_page, status

browser = browserlib.browser  # the fixture: a headless chromium, every process of it ended by PID

HOSTILE = "<img src=x onerror=\"document.title='pwned'\"><script>document.title='pwned'</script>"


@pytest.fixture
def cluster(tmp_path: Path):  # type: ignore[no-untyped-def]
    c = Cluster(tmp_path)
    yield c
    c.close()


def _client(tmp_path: Path, text: str, *args: str) -> subprocess.Popen[str]:
    """A user's script, started in the background: it runs until its stdin closes."""
    script = tmp_path / "client.py"
    script.write_text(text)
    env = dict(os.environ, PPFT_SECRET=SECRET, PYTHONUNBUFFERED="1")
    return subprocess.Popen(tied_to_this_process([sys.executable, str(script), *args]), stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)  # fmt: skip


def _stop(proc: subprocess.Popen[str]) -> str:
    try:
        out, err = proc.communicate("", timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    assert proc.returncode == 0, err
    return out


STREAM = """
import sys, time
import ppft as pp

def work(x):
    import time
    time.sleep(0.002)
    return x

job_server = pp.Server(0, ppservers=(sys.argv[1],))
print("started", flush=True)
stop = []
import threading
threading.Thread(target=lambda: (sys.stdin.read(), stop.append(1)), daemon=True).start()
while not stop:
    [job() for job in [job_server.submit(work, (i,)) for i in range(50)]]
job_server.destroy()
"""


def test_the_ppserver_page_loads_cleanly_and_its_numbers_move(
    browser,
    cluster: Cluster,
    tmp_path: Path,  # type: ignore[no-untyped-def]
) -> None:
    server, url = ppserver_with_page(cluster, workers=2)
    browser.get(url)
    wait_for(browser, lambda: text_of(browser, "workers-count") == "(2)", what="two workers")
    assert card(browser, "workers") == "2"
    assert text_of(browser, "title").startswith("ppserver ")
    assert card(browser, "jobs done") == "0"
    client = _client(tmp_path, STREAM, server.address)
    try:
        assert client.stdout is not None and client.stdout.readline() == "started\n"
        wait_for(browser, lambda: int(card(browser, "jobs done")) > 0, what="jobs done to move")
        first = int(card(browser, "jobs done"))
        wait_for(browser, lambda: int(card(browser, "jobs done")) > first, what="jobs done to move again")
        wait_for(browser, lambda: "none connected" not in text_of(browser, "clients"), what="the client")
    finally:
        _stop(client)
    wait_for(browser, lambda: "none connected" in text_of(browser, "clients"), what="the client to leave")
    assert browser.execute_script("return document.querySelector('#chart polyline') !== null")
    assert console_errors(browser) == []


HOSTILE_JOB = f"""
import sys, time
import ppft as pp

def nap(seconds):
    time.sleep(seconds)

nap.__qualname__ = {HOSTILE!r}
job_server = pp.Server(0, ppservers=(sys.argv[1],))
job = job_server.submit(nap, (60,), modules=("time",))
print("submitted", flush=True)
sys.stdin.read()
job_server.destroy()
"""


def test_a_hostile_function_name_is_shown_as_text(
    browser,
    cluster: Cluster,
    tmp_path: Path,  # type: ignore[no-untyped-def]
) -> None:
    server, url = ppserver_with_page(cluster, workers=1)
    client = _client(tmp_path, HOSTILE_JOB, server.address)
    try:
        assert client.stdout is not None and client.stdout.readline() == "submitted\n"
        browser.get(url)
        wait_for(browser, lambda: "onerror" in text_of(browser, "workers"), what="the running job's name")
        assert HOSTILE in text_of(browser, "workers")  # as text, every character of it
        assert browser.execute_script("return document.querySelectorAll('img, #workers script').length") == 0
        assert browser.title != "pwned" and not browser.title.startswith("pwned")
        assert console_errors(browser) == []
    finally:
        _stop(client)


CLIENT_PAGE = """
import sys
import ppft as pp

job_server = pp.Server(2, ppservers=(sys.argv[1],))
url = job_server.serve_status("127.0.0.1:0")
print(url, flush=True)
sum(job() for job in [job_server.submit(abs, (-i,)) for i in range(500)])
print("ran", flush=True)
sys.stdin.read()
job_server.destroy()
"""


def test_a_clients_own_page_shows_its_workers_and_its_ppserver(
    browser,
    cluster: Cluster,
    tmp_path: Path,  # type: ignore[no-untyped-def]
) -> None:
    server, server_url = ppserver_with_page(cluster, workers=1)
    client = _client(tmp_path, CLIENT_PAGE, server.address)
    try:
        assert client.stdout is not None
        url = client.stdout.readline().strip()
        assert url.startswith("http://127.0.0.1:") and url.endswith("/")
        assert client.stdout.readline() == "ran\n"
        browser.get(url)
        wait_for(browser, lambda: text_of(browser, "workers-count") == "(2)", what="the two local workers")
        assert text_of(browser, "title").startswith("ppft client ")
        wait_for(browser, lambda: card(browser, "jobs done") == "500", what="the 500 jobs")
        wait_for(browser, lambda: server.address in text_of(browser, "nodes"), what="the ppserver's row")
        # the jobs may all have run locally before the ppserver's link was up: wait for it
        wait_for(browser, lambda: "ready" in text_of(browser, "nodes"), what="the ppserver to be ready")
        script = "return [...document.querySelectorAll('#nodes a')].map(a => a.href)"
        wait_for(browser, lambda: browser.execute_script(script) == [server_url], what="the link to its page")
        assert status(url)["jobs"]["ok"] == 500
        assert console_errors(browser) == []
    finally:
        _stop(client)
