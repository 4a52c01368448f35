"""Limits on jobs from a user's script (tests/scripts/limits_jobs.py): a time limit that kills the job's
worker and raises `JobTimeoutError` within 2 s, the next job running at once, and `terminate()` of a
running job returning within 1 s; run as a file, with -c and from stdin, on local workers, on a real
ppserver, on a ppserver whose only workers dial in, and on a ppserver that speaks protocol version 1
(ppft 2.0.0), where the client enforces the limit itself."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from clusterlib import ACCEPT_WORKERS, Cluster
from scriptlib import HOWS, protocol_1_ppserver, run_script  # noqa: F401 - protocol_1_ppserver: a fixture

EXPECTED = {
    "warm": "0",
    "timeout": "True True True True",
    "next": "0 True",
    "template": "JobTimeoutError",
    "terminate": "True True",
    "cancelled": "True True True",
    "after": "0 True",
    "stats": "True",
}


@pytest.fixture(scope="module", params=["local", "ppserver", "dial-in"])
def mode(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, str]]:
    """The environment of the script: local workers; a ppserver with 2 workers; a ppserver with none of
    its own and a dial-in worker with 2. Every process is ended by PID at teardown."""
    if request.param == "local":
        yield {}
        return
    cluster = Cluster(tmp_path_factory.mktemp("limits"))
    try:
        if request.param == "ppserver":
            server = cluster.ppserver(workers=2)
        else:
            server = cluster.ppserver(workers=0, extra=ACCEPT_WORKERS)
            cluster.dialin(server, 2)
        yield {"PPSERVER": server.address}
    finally:
        cluster.close()


def _printed(ran) -> dict[str, str]:  # type: ignore[no-untyped-def]
    return dict(line.split(": ", 1) for line in ran.stdout.splitlines() if ": " in line)


@pytest.mark.parametrize("how", HOWS)
def test_time_limits_and_terminate_from_a_script(mode, how):
    ran = run_script("limits_jobs.py", how=how, env=mode).check()
    printed = _printed(ran)
    assert {key: printed.get(key) for key in EXPECTED} == EXPECTED, ran.stdout + ran.stderr
    message = printed["timeout message"]
    assert "sleepy) ran longer than its timeout of 1 s on" in message
    assert "its worker was killed and replaced" in message
    where = {"": "local worker", "ppserver": "ppserver ", "dial-in": "dial-in worker "}
    assert any(text in message for text in where.values())


def test_with_a_protocol_1_ppserver_the_client_enforces_the_limit(protocol_1_ppserver):  # noqa: F811
    ran = run_script("limits_jobs.py", env={**protocol_1_ppserver, "OLD_PPSERVER": "1"}).check()
    printed = _printed(ran)
    # a version-1 ppserver cannot stop a running job: the timed-out job runs on there, holding a worker
    for key in ("warm", "timeout", "terminate", "cancelled"):
        assert printed.get(key) == EXPECTED[key], ran.stdout + ran.stderr
    assert "counted from when it was sent: that peer speaks protocol version 1" in printed["timeout message"]


WORKER_LIMITS = ("--worker-memory-limit", "200MiB", "--max-jobs-per-worker", "20")


@pytest.fixture(scope="module", params=["local", "ppserver", "dial-in"])
def limited_mode(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, str]]:
    """As `mode`, with the workers' limits of tests/scripts/limits_workers.py given to the ppserver, or to
    the dial-in worker."""
    if request.param == "local":
        yield {}
        return
    cluster = Cluster(tmp_path_factory.mktemp("limits"))
    try:
        if request.param == "ppserver":
            server = cluster.ppserver(workers=2, extra=WORKER_LIMITS)
        else:
            server = cluster.ppserver(workers=0, extra=ACCEPT_WORKERS)
            cluster.dialin(server, 2, extra=WORKER_LIMITS)
        yield {"PPSERVER": server.address}
    finally:
        cluster.close()


def test_memory_limit_and_recycling_from_a_script(limited_mode, request):
    ran = run_script("limits_workers.py", env=limited_mode).check()
    printed = _printed(ran)
    expected = {"small": "10", "memory": "True True", "healed": "10 True", "recycled": "True True"}
    assert {key: printed.get(key) for key in expected} == expected, ran.stdout + ran.stderr
    dial_in = request.node.callspec.params["limited_mode"] == "dial-in"
    ran_what = "the job (hog)" if dial_in else "job 1 (hog)"  # a dial-in worker knows the ppserver's ids only
    assert f"while it ran {ran_what}, so the job is not retried" in printed["memory message"]
