"""The cipher of a sealed client <-> ppserver link, with a real ppserver subprocess: AES-256-GCM when both
ends have AES hardware (this machine has it), ChaCha20-Poly1305 when either end sets PPFT_CIPHER=chacha20;
right results with large arguments either way, and through a dial-in worker's sealed link too."""

from __future__ import annotations

import logging
from collections.abc import Callable

import pytest

import ppft
from clusterlib import Cluster, wait_until
from ppft_client.nodes.remote import RemoteNode
from ppft_worker.runtime.cpufeatures import has_aes_hardware

MakeClient = Callable[..., ppft.Server]

needs_aes = pytest.mark.skipif(not has_aes_hardware(), reason="this machine has no AES hardware")


def echo(data: bytes) -> bytes:
    return data


def add_one(x: int) -> int:
    return x + 1


def remote_node(client: ppft.Server, address: str) -> RemoteNode:
    """The client's node for `address`, once it is connected (so its `cipher` is known)."""
    wait_until(lambda: address in client.get_active_nodes(), 15, f"the ppserver {address} to be connected")
    (node,) = [n for n in client._scheduler.nodes if n.name == address]
    assert isinstance(node, RemoteNode)
    return node


def check_results(client: ppft.Server) -> None:
    payloads = [bytes([i]) * (3 << 20) + bytes(range(256)) for i in range(3)]  # 3 MiB and a bit, each
    large = [client.submit(echo, (data,)) for data in payloads]
    small = [client.submit(add_one, (i,)) for i in range(200)]
    assert [job.result(timeout=60) for job in large] == payloads
    assert [job.result(timeout=60) for job in small] == list(range(1, 201))


@pytest.fixture(autouse=True)
def auto_cipher(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test starts with the detection in charge, whatever the environment that runs the suite says."""
    monkeypatch.delenv("PPFT_CIPHER", raising=False)


@needs_aes
def test_link_between_two_aes_capable_ends_is_aes_gcm(
    cluster: Cluster, make_client: MakeClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="ppft.remote")
    node = cluster.ppserver(2, extra=("-d",))  # -d: the sessions' log lines, with their cipher
    client = make_client(0, ppservers=(node.address,))
    remote = remote_node(client, node.address)
    assert (remote.sealed, remote.cipher) == (True, "aes-256-gcm")
    assert f"connected to ppserver {node.address} (2 workers, sealed with aes-256-gcm)" in caplog.text
    wait_until(lambda: "authenticated (sealed with aes-256-gcm)" in cluster.read_log(node), 10,
               "the ppserver to log the session's cipher")  # fmt: skip
    check_results(client)


def test_ppft_cipher_chacha20_on_the_client_gives_chacha20(
    cluster: Cluster, make_client: MakeClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    node = cluster.ppserver(2)
    monkeypatch.setenv("PPFT_CIPHER", "chacha20")  # read by the client when it connects
    client = make_client(0, ppservers=(node.address,))
    remote = remote_node(client, node.address)
    assert (remote.sealed, remote.cipher) == (True, "chacha20-poly1305")
    check_results(client)


def test_ppft_cipher_chacha20_on_the_ppserver_gives_chacha20(
    cluster: Cluster, make_client: MakeClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PPFT_CIPHER", "chacha20")
    node = cluster.ppserver(2)  # the subprocess inherits it
    monkeypatch.delenv("PPFT_CIPHER")  # the client in this process offers AES-256-GCM again
    client = make_client(0, ppservers=(node.address,))
    remote = remote_node(client, node.address)
    assert (remote.sealed, remote.cipher) == (True, "chacha20-poly1305")
    check_results(client)


def test_dial_in_worker_link_carries_large_jobs_with_the_negotiated_cipher(
    cluster: Cluster, make_client: MakeClient
) -> None:
    node = cluster.ppserver(0, extra=("--workers-secret", "dial-in workers' secret"))  # only dial-in workers
    cluster.dialin(node, 1, secret="dial-in workers' secret")
    client = make_client(0, ppservers=(node.address,))
    wait_until(lambda: client.get_active_nodes().get(node.address) == 1, 30, "the dial-in worker to join")
    check_results(client)
