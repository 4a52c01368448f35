"""A ppserver tells its clients where its status page is (protocol version 2, `NodeInfo.page`), and a
client's status links it; a version-1 client (ppft 2.0.0) gets version 1's NodeInfo exactly and runs jobs
as before."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from clusterlib import SECRET, Cluster, free_port, listening, wait_until
from ppft_protocol import Connection, NodeInfo, Role
from ppft_worker.observe import page_link
from statuslib import ppserver_with_page


@pytest.fixture
def cluster(tmp_path: Path):  # type: ignore[no-untyped-def]
    c = Cluster(tmp_path)
    yield c
    c.close()


def _node_info(port: int, versions: tuple[int, int]) -> tuple[int, NodeInfo]:
    """Connect as a client speaking `versions`; the negotiated version and the ppserver's NodeInfo."""
    with socket.create_connection(("127.0.0.1", port), timeout=20) as sock:
        conn = Connection(Role.CLIENT, SECRET.encode(), versions=versions)
        sock.sendall(conn.data_to_send())
        while True:
            data = sock.recv(1 << 16)
            assert data, "the ppserver closed the connection"
            events = conn.receive_data(data)
            out = conn.data_to_send()
            if out:
                sock.sendall(out)
            for event in events:
                if isinstance(event, NodeInfo):
                    return conn.version, event


def test_a_version_2_client_is_told_the_page_and_a_version_1_client_is_not(cluster: Cluster) -> None:
    server, url = ppserver_with_page(cluster)
    version, info = _node_info(server.port, (1, 2))
    assert version == 2 and info.page == url and info.kind == "server"
    version, info = _node_info(server.port, (1, 1))
    assert version == 1 and info.page == "" and info.workers == 2


def test_a_page_on_every_address_is_linked_under_the_address_the_client_used(cluster: Cluster) -> None:
    port = free_port()
    server = cluster.ppserver(1, extra=("--http", f"0.0.0.0:{port}", "--http-public"))
    wait_until(lambda: listening(port), 30, "the status page")
    _, info = _node_info(server.port, (1, 2))
    assert info.page == f"http://0.0.0.0:{port}/"
    script = (
        "import json, sys, time\n"
        "import ppft as pp\n"
        f"s = pp.Server(0, ppservers=({server.address!r},))\n"
        "assert s.submit(abs, (-3,))() == 3\n"
        "print(json.dumps(s.status()['nodes']))\n"
        "s.destroy()\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60,
                          env={**os.environ, "PPFT_SECRET": SECRET}, check=False)  # fmt: skip
    assert done.returncode == 0, done.stderr
    (node,) = json.loads(done.stdout)
    assert node["page"] == f"http://127.0.0.1:{port}/"
    shown = [node[key] for key in ("name", "kind", "state", "jobs_done")]
    assert shown == [server.address, "ppserver", "ready", 1]


def test_a_ppserver_without_a_page_has_none_to_link(cluster: Cluster) -> None:
    server = cluster.ppserver(1)
    assert _node_info(server.port, (1, 2))[1].page == ""


@pytest.mark.parametrize(
    ("announced", "shown"),
    [
        ("http://10.0.0.5:8080/", "http://10.0.0.5:8080/"),
        ("https://[::]:8443/", "https://node1:8443/"),
        ("http://0.0.0.0:80", "http://node1:80/"),
        ("javascript:alert(1)//:80", ""),
        ('http://a:80/"><script>', ""),
        ("http://user:pw@a:80/", ""),
        ("ftp://a:21/", ""),
        ("http://a/", ""),  # no port: not one a ppserver announces
        ("http://a:99999/", ""),
        ("", ""),
    ],
)
def test_page_links_are_plain_http_addresses_only(announced: str, shown: str) -> None:
    assert page_link(announced, "node1") == shown
