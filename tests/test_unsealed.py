"""Unsealed loopback links: `Server(seal=False)` with `ppserver --allow-plain-loopback`, and nothing less.

A link is unsealed only when both ends agree and both are on this machine: the client offers it only to a
peer whose connected address is loopback, the ppserver grants it only with its flag and only to a loopback
peer. Everything else stays sealed, and results are right either way.
"""

from __future__ import annotations

import contextlib
import logging
import re
import socket
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

import ppft
from clusterlib import SECRET, Cluster, wait_until
from ppft_client.nodes.remote import RemoteNode
from ppft_protocol import Connection, Established, NodeInfo, ProtocolError, Role
from ppft_server.node import NodeServer

FLAG = ("--allow-plain-loopback",)
UNSEALED_LINE = "unsealed: loopback, both ends agreed"
MakeClient = Callable[..., ppft.Server]


def add_one(x: int) -> int:
    return x + 1


def echo(data: bytes) -> bytes:
    return data


def remote_node(client: ppft.Server, address: str) -> RemoteNode:
    """The client's node for `address`, once it is connected (so its `sealed` is known)."""
    wait_until(lambda: address in client.get_active_nodes(), 15, f"the ppserver {address} to be connected")
    (node,) = [n for n in client._scheduler.nodes if n.name == address]
    assert isinstance(node, RemoteNode)
    return node


def check_small_and_large_jobs(client: ppft.Server) -> None:
    small = [client.submit(add_one, (i,)) for i in range(2000)]
    assert [job.result(timeout=60) for job in small] == list(range(1, 2001))
    payloads = [bytes([i]) * (3 << 20) + bytes(range(256)) for i in range(4)]  # 3 MiB and a bit, each
    large = [client.submit(echo, (data,)) for data in payloads]
    assert [job.result(timeout=60) for job in large] == payloads


# -- both ends ------------------------------------------------------------------------------------------


def test_link_is_unsealed_when_both_ends_agree_on_loopback(
    cluster: Cluster, make_client: MakeClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="ppft.remote")
    node = cluster.ppserver(2, extra=FLAG)
    client = make_client(0, ppservers=(node.address,), seal=False)
    assert remote_node(client, node.address).sealed is False
    assert f"link to {node.address} {UNSEALED_LINE}" in caplog.text


def test_unsealed_link_gives_right_results_for_small_and_large_args(
    cluster: Cluster, make_client: MakeClient
) -> None:
    node = cluster.ppserver(2, extra=FLAG)
    client = make_client(0, ppservers=(node.address,), seal=False)
    assert remote_node(client, node.address).sealed is False
    check_small_and_large_jobs(client)
    assert client.get_stats()[node.address].njobs == 2004


def test_unsealed_link_keeps_the_classic_node_formats(cluster: Cluster, make_client: MakeClient) -> None:
    node = cluster.ppserver(2, extra=FLAG)
    client = make_client(0, ppservers=(node.address,), seal=False)
    assert remote_node(client, node.address).sealed is False
    assert client.submit(add_one, (1,)).result(timeout=30) == 2
    assert client.get_active_nodes() == {"local": 0, node.address: 2}
    assert set(client.get_stats()) == {"local", node.address}


def test_seal_false_without_the_server_flag_stays_sealed(
    cluster: Cluster, make_client: MakeClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="ppft.remote")
    node = cluster.ppserver(2)
    client = make_client(0, ppservers=(node.address,), seal=False)
    assert remote_node(client, node.address).sealed is True
    check_small_and_large_jobs(client)
    assert "--allow-plain-loopback" in caplog.text and UNSEALED_LINE not in caplog.text


def test_server_flag_with_a_sealing_client_stays_sealed(cluster: Cluster, make_client: MakeClient) -> None:
    node = cluster.ppserver(2, extra=FLAG)
    client = make_client(0, ppservers=(node.address,))  # seal=True, the default
    assert remote_node(client, node.address).sealed is True
    check_small_and_large_jobs(client)


def test_executor_forwards_seal(cluster: Cluster) -> None:
    node = cluster.ppserver(1, extra=FLAG)
    with ppft.Executor(0, ppservers=(node.address,), secret=SECRET, seal=False) as ex:
        assert remote_node(ex.server, node.address).sealed is False
        assert list(ex.map(add_one, range(100))) == list(range(1, 101))


def test_wrong_secret_with_seal_false_is_refused_and_runs_nothing(
    cluster: Cluster, make_client: MakeClient, caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    node = cluster.ppserver(1, secret="the-servers-secret", extra=FLAG)
    marker = tmp_path / "ran"
    caplog.set_level(logging.WARNING, logger="ppft")
    client = make_client(0, ppservers=(node.address,), secret="another-secret", seal=False)
    job = client.submit(open, (str(marker), "w"))
    wait_until(lambda: "wrong secret" in caplog.text, 5, "the wrong-secret warning")
    assert node.address in caplog.text
    assert set(client.get_active_nodes()) == {"local"}
    # no local workers, and the only node refused for good: the job fails with NoNodeError, runs nowhere
    assert isinstance(job.exception(timeout=10), ppft.NoNodeError) and not marker.exists()
    # the ppserver logs the refusal as its side of the connection ends, after the client was told
    refused = re.compile(r"refused connection from .*wrong secret")
    wait_until(lambda: refused.search(cluster.read_log(node)) is not None, 10, "the refusal in its log")


# -- the ppserver's decision ----------------------------------------------------------------------------


@pytest.fixture
def node_server() -> Iterator[Callable[..., NodeServer]]:
    """NodeServers that are never started (the decision needs no socket), closed at teardown."""
    made: list[NodeServer] = []

    def make(allow_plain_loopback: bool = False) -> NodeServer:
        server = NodeServer(port=0, secret=b"s", workers=0, allow_plain_loopback=allow_plain_loopback)
        made.append(server)
        return server

    try:
        yield make
    finally:
        for server in made:
            server.close()


@pytest.mark.parametrize(
    ("host", "granted"),
    [
        ("10.0.0.1", False),
        ("::1", True),
        ("127.0.0.5", True),
        ("::ffff:127.0.0.1", True),
        ("192.168.1.2", False),
        ("::ffff:10.0.0.1", False),
        ("fe80::1%eth0", False),
        ("not an address", False),
    ],
)
def test_ppserver_grants_plain_only_to_loopback_peers(
    node_server: Callable[..., NodeServer], host: str, granted: bool
) -> None:
    assert node_server(allow_plain_loopback=True).grants_plain(host) is granted


@pytest.mark.parametrize("host", ["127.0.0.1", "::1", "::ffff:127.0.0.1", "10.0.0.1"])
def test_ppserver_without_the_flag_grants_plain_to_nobody(
    node_server: Callable[..., NodeServer], host: str
) -> None:
    assert node_server().grants_plain(host) is False


# -- the client's offer ---------------------------------------------------------------------------------


class HandshakeOnlyServer:
    """Answers one client as a ppserver that allows plain would (any peer), and records whether the channel
    ended up sealed: what it shows is whether the client offered plain."""

    def __init__(self, host: str) -> None:
        self.sock = socket.socket()
        self.sock.bind((host, 0))
        self.sock.listen(1)
        self.sock.settimeout(10)
        self.address = f"{host}:{self.sock.getsockname()[1]}"
        self.sealed: bool | None = None
        self.established = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        with contextlib.suppress(OSError, ProtocolError):
            peer, _ = self.sock.accept()
            with peer:
                peer.settimeout(0.2)
                conn = Connection(Role.SERVER, SECRET, allow_plain=True)
                peer.sendall(conn.data_to_send())
                while not self._stop.is_set():
                    try:
                        data = peer.recv(65536)
                    except TimeoutError:
                        continue
                    for event in conn.receive_data(data):
                        if isinstance(event, Established):
                            self.sealed = event.sealed
                            conn.send(NodeInfo("server", 1, "2.0.0", "handshake-only"))
                            self.established.set()
                    peer.sendall(conn.data_to_send())
                    if not data:
                        return

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.sock.close()


def _non_loopback_address() -> str | None:
    """An address of this host that is not loopback (the route's source; nothing is sent), or None."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("192.0.2.1", 9))
        except OSError:
            return None
        host = str(probe.getsockname()[0])
    return None if host.startswith("127.") or host == "0.0.0.0" else host


@pytest.mark.parametrize("where", ["127.0.0.1", "localhost", "non-loopback"])
def test_client_offers_plain_only_to_a_loopback_peer_address(make_client: MakeClient, where: str) -> None:
    host = _non_loopback_address() if where == "non-loopback" else "127.0.0.1"
    if host is None:
        pytest.skip("this host has no non-loopback IPv4 address")
    server = HandshakeOnlyServer(host)
    try:
        port = server.address.rsplit(":", 1)[1]
        address = f"localhost:{port}" if where == "localhost" else server.address
        client = make_client(0, ppservers=(address,), seal=False)
        assert server.established.wait(15), "the client never finished the handshake"
        assert server.sealed is (where == "non-loopback")
        assert remote_node(client, address).sealed is server.sealed
    finally:
        server.close()


# -- bad input ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("seal", [0, 1, "no", None])
def test_seal_that_is_not_a_bool_is_a_type_error(seal: object) -> None:
    with pytest.raises(TypeError, match="seal must be True or False"):
        ppft.Server(0, seal=seal)  # type: ignore[arg-type]


def test_executor_seal_that_is_not_a_bool_is_a_type_error() -> None:
    with pytest.raises(TypeError, match="seal must be True or False"):
        ppft.Executor(0, seal="off")  # type: ignore[arg-type]


def test_seal_is_keyword_only() -> None:
    with pytest.raises(TypeError):
        ppft.Server(0, (), None, False, None, 3600, False)  # type: ignore[call-arg]
