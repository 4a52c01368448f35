"""Auto-discovery: a ppserver started with -a is found and used by a client given a wildcard entry; forged
announcements neither shut a real ppserver out nor pile up nodes."""

from __future__ import annotations

import socket
import time

from clusterlib import free_port, wait_until
from ppft_client.nodes.discovery import MAX_UNANSWERED
from ppft_protocol import PROTOCOL_VERSIONS


def add_one(x):
    return x + 1


def test_wildcard_client_finds_and_uses_an_announcing_ppserver(cluster, make_client):
    node = cluster.ppserver(2, extra=("-a", "-b", "127.255.255.255"))
    client = make_client(0, ppservers=(f"*:{node.port}",))
    wait_until(lambda: node.address in client.get_active_nodes(), 15, "the announced ppserver")
    assert client.submit(add_one, (41,)).result(timeout=30) == 42
    assert client.get_stats()[node.address].njobs == 1
    assert client.auto_ppservers == [(("0.0.0.0", node.port), ("255.255.255.255", node.port))]


# -- forged announcements: a datagram only suggests an address; the TCP handshake decides ------------------


def forge(udp_port: int, tcp_port: int, versions: tuple[int, int] = (9, 9)) -> None:
    """One Announce, as anyone on the network can send it, naming `tcp_port`."""
    from ppft_protocol.discovery import Announce, encode_datagram

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
        sock.sendto(encode_datagram(Announce(tcp_port, *versions, "forged")), ("127.255.255.255", udp_port))


def test_a_forged_announce_with_other_versions_does_not_shut_out_the_real_ppserver(cluster, make_client):
    node = cluster.ppserver(2)  # not announcing itself: only forged datagrams name its port
    udp = free_port()
    client = make_client(0, ppservers=(f"*:{udp}",))
    deadline = time.monotonic() + 15
    while node.address not in client.get_active_nodes():  # versions 9-9: tried anyway, and it answers
        assert time.monotonic() < deadline, "the real ppserver was never used"
        forge(udp, node.port)
        time.sleep(0.1)  # the pace of the forger's datagrams, not a synchronisation
    assert client.submit(add_one, (41,)).result(timeout=30) == 42


def test_forged_announces_for_many_ports_are_tried_a_few_at_a_time_and_forgotten(cluster, make_client):
    node = cluster.ppserver(2)
    udp = free_port()
    client = make_client(0, ppservers=(f"*:{udp}",))
    scheduler = client._scheduler
    ports = [free_port() for _ in range(3 * MAX_UNANSWERED)]  # nothing listens on any of them
    most = 0
    for port in ports:
        forge(udp, port, PROTOCOL_VERSIONS)
        most = max(most, len(scheduler.nodes))
    wait_until(lambda: not any(n.name.endswith(tuple(f":{p}" for p in ports)) for n in scheduler.nodes), 15,
               "the forged addresses to be forgotten")  # fmt: skip
    assert most <= MAX_UNANSWERED
    deadline = time.monotonic() + 15
    while node.address not in client.get_active_nodes():  # the real one is still welcome
        assert time.monotonic() < deadline, "the real ppserver was never used"
        forge(udp, node.port, PROTOCOL_VERSIONS)
        time.sleep(0.1)
    assert client.submit(add_one, (1,)).result(timeout=30) == 2
    assert scheduler._thread.is_alive()
