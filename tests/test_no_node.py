"""Jobs with no node: they wait, and say so every 30 s, while a node may come; they fail with `NoNodeError`
when every node refused this client for good and there are no local workers. Bad addresses are refused
where they are written.

The waiting report's period is lowered here (`waiting.WAIT_REPORT_INTERVAL`), so no test waits 30 s.
"""

from __future__ import annotations

import logging

import pytest

import ppft
from clusterlib import SECRET, free_port, wait_until
from peerlib import greeting_then_read, legacy_message
from ppft_client import waiting
from ppft_client.nodes import remote

TIMEOUT = 30


def add_one(x):
    return x + 1


@pytest.fixture(autouse=True)
def _quick(monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setattr(waiting, "WAIT_REPORT_INTERVAL", 0.3)
    caplog.set_level(logging.INFO, logger="ppft")


def waiting_reports(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if "waiting for" in r.getMessage()]


# -- refused for good: NoNodeError -------------------------------------------------------------------------


def test_wrong_secret_and_no_local_workers_fails_pending_and_new_jobs(cluster, make_client):
    node = cluster.ppserver(1, secret="the-servers-secret")
    client = make_client(0, ppservers=(node.address,), secret="another-secret")
    pending = client.submit(add_one, (1,))
    with pytest.raises(ppft.NoNodeError) as caught:
        pending.result(timeout=TIMEOUT)
    message = str(caught.value)
    assert node.address in message and "wrong secret" in message and "no local workers" in message
    with pytest.raises(ppft.NoNodeError):  # a new job fails too, at once
        client.submit(add_one, (2,)).result(timeout=TIMEOUT)
    assert isinstance(caught.value, ppft.PPFTError) and pp_exports_it()


def pp_exports_it() -> bool:
    import pp

    return pp.NoNodeError is ppft.NoNodeError and "NoNodeError" in ppft.__all__


def test_local_workers_given_back_run_the_jobs_that_no_node_would(cluster, make_client):
    node = cluster.ppserver(1, secret="the-servers-secret")
    client = make_client(0, ppservers=(node.address,), secret="another-secret")
    with pytest.raises(ppft.NoNodeError):
        client.submit(add_one, (1,)).result(timeout=TIMEOUT)
    client.set_ncpus(1)
    assert client.submit(add_one, (2,)).result(timeout=TIMEOUT) == 3


def test_set_ncpus_0_with_only_refusing_nodes_fails_jobs_with_no_node_error(cluster, make_client):
    node = cluster.ppserver(1, secret="the-servers-secret")
    client = make_client(1, ppservers=(node.address,), secret="another-secret")
    assert client.submit(add_one, (1,)).result(timeout=TIMEOUT) == 2
    wait_until(lambda: _node(client, node.address).permanent, TIMEOUT, "the refusal")
    client.set_ncpus(0)
    with pytest.raises(ppft.NoNodeError):
        client.submit(add_one, (2,)).result(timeout=TIMEOUT)


def test_a_refusing_node_that_becomes_usable_runs_new_jobs(cluster, make_client, monkeypatch):
    monkeypatch.setattr(remote, "_REFUSED_BACKOFF", 0.5)  # instead of 60 s between tries
    node = cluster.ppserver(1, secret="the-servers-secret")
    client = make_client(0, ppservers=(node.address,), secret=SECRET)
    with pytest.raises(ppft.NoNodeError):
        client.submit(add_one, (1,)).result(timeout=TIMEOUT)
    cluster.kill(node)
    node.popen.wait(10)
    again = cluster.ppserver(1, port=node.port)  # the same port, the client's secret
    wait_until(lambda: again.address in client.get_active_nodes(), TIMEOUT, "the node to become usable")
    assert client.submit(add_one, (2,)).result(timeout=TIMEOUT) == 3


@pytest.fixture
def legacy(fake_peer):
    """A peer that answers every connection as a ppft 1.x ppserver does (its version string)."""
    return fake_peer(greeting_then_read(legacy_message(b"1.7.8") + legacy_message(b"0123456789abcdef")))


def test_every_node_refusing_for_its_own_reason_is_listed_in_the_error(cluster, make_client, legacy):
    node = cluster.ppserver(1, secret="the-servers-secret")
    old = f"127.0.0.1:{legacy.port}"
    client = make_client(0, ppservers=(node.address, old), secret="another-secret")
    with pytest.raises(ppft.NoNodeError) as caught:
        client.submit(add_one, (1,)).result(timeout=TIMEOUT)
    message = str(caught.value)
    assert f"{node.address}: wrong secret" in message
    assert f"{old}: legacy ppft 1.x peer" in message


# -- waiting, and saying so ---------------------------------------------------------------------------------


def test_jobs_wait_while_a_node_may_still_answer_and_say_so_periodically(cluster, make_client, caplog):
    refused = cluster.ppserver(1, secret="the-servers-secret")
    nobody = f"127.0.0.1:{free_port()}"  # connection refused: may pass (a ppserver may start there)
    client = make_client(0, ppservers=(refused.address, nobody), secret="another-secret")
    jobs = [client.submit(add_one, (i,)) for i in range(3)]
    wait_until(lambda: len(waiting_reports(caplog)) >= 2, TIMEOUT, "two waiting reports")
    assert not any(job.done() for job in jobs)
    first, second = waiting_reports(caplog)[:2]
    assert first.startswith("3 job(s) waiting for 0.3 s: no usable node (")
    assert second.startswith("3 job(s) waiting for 0.6 s: no usable node (")
    assert f"{nobody}: connection refused" in first and f"{refused.address}: wrong secret" in first


def test_waiting_jobs_run_when_a_node_comes(cluster, make_client, caplog):
    port = free_port()
    client = make_client(0, ppservers=(f"127.0.0.1:{port}",))
    job = client.submit(add_one, (1,))
    wait_until(lambda: waiting_reports(caplog), TIMEOUT, "a waiting report")
    assert f"1 job(s) waiting for 0.3 s: no usable node (127.0.0.1:{port}: connection refused)" in caplog.text
    cluster.ppserver(1, port=port)
    assert job.result(timeout=TIMEOUT) == 2


def test_a_ppserver_without_workers_yet_is_named_as_such_and_jobs_run_when_workers_dial_in(
    cluster, make_client, caplog
):
    hub = cluster.ppserver(0, extra=("--accept-workers",))  # only dial-in workers will run jobs there
    client = make_client(0, ppservers=(hub.address,))
    job = client.submit(add_one, (1,))
    wait_until(lambda: waiting_reports(caplog), TIMEOUT, "a waiting report")
    assert f"({hub.address}: connected, but it has no workers)" in waiting_reports(caplog)[0]
    cluster.dialin(hub, workers=1)
    assert job.result(timeout=TIMEOUT) == 2


def test_auto_discovery_with_nothing_found_yet_waits_instead_of_failing(make_client, caplog):
    client = make_client(0, ppservers=(f"*:{free_port()}",))
    job = client.submit(add_one, (1,))
    wait_until(lambda: waiting_reports(caplog), TIMEOUT, "a waiting report")
    assert "auto-discovery on" in waiting_reports(caplog)[0]
    assert not job.done()


def test_set_ncpus_0_without_nodes_holds_jobs_until_workers_come_back(make_client, caplog):
    client = make_client(1)
    assert client.submit(add_one, (1,)).result(timeout=TIMEOUT) == 2
    client.set_ncpus(0)
    job = client.submit(add_one, (2,))
    wait_until(lambda: waiting_reports(caplog), TIMEOUT, "a waiting report")
    assert "no local workers (ncpus=0) and no ppserver" in waiting_reports(caplog)[0]
    assert not job.done()
    client.set_ncpus(1)
    assert job.result(timeout=TIMEOUT) == 3


# -- addresses refused where they are written ------------------------------------------------------------


@pytest.mark.parametrize(
    ("entry", "why"),
    [
        ("a..b:60000", "'a..b' is not a valid host name (an empty label"),
        ("a..b", "'a..b' is not a valid host name"),
        (".node:60000", "an empty label"),
        ("no space.example:60000", "has characters no host name has"),
        ("1.2.3.4.5:60000", "is neither an IPv4 address nor a host name"),
        ("x" * 64 + ".example:60000", "a label longer than 63 characters"),
    ],
)
def test_a_host_name_that_can_never_resolve_is_a_value_error_naming_the_entry(entry, why):
    with pytest.raises(ValueError) as caught:
        ppft.Server(0, ppservers=(entry, "127.0.0.1:35000"), secret=SECRET)
    assert f"ppservers entry {entry!r}" in str(caught.value) and why in str(caught.value)


def test_connect1_refuses_a_bad_name_and_a_bad_port(make_client):
    client = make_client(0)
    with pytest.raises(ValueError, match=r"'a\.\.b' is not a valid host name"):
        client.connect1("a..b", 60000)
    with pytest.raises(ValueError, match="the port must be a number in 1-65535"):
        client.connect1("127.0.0.1", 70000)
    assert client.submit(abs, (-1,)) is not None  # the server is unharmed


@pytest.mark.parametrize("host", ["localhost", "node1.example.org", "bücher.example", "127.0.0.1", "[::1]"])
def test_names_that_may_resolve_are_accepted(make_client, host):
    make_client(0, ppservers=(f"{host}:1",))


def _node(client: ppft.Server, name: str):  # type: ignore[no-untyped-def]
    return next(n for n in client._scheduler.nodes if n.name == name)
