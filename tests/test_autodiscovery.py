"""Auto-discovery: a ppserver started with -a is found and used by a client given a wildcard entry."""

from __future__ import annotations

from clusterlib import wait_until


def add_one(x):
    return x + 1


def test_wildcard_client_finds_and_uses_an_announcing_ppserver(cluster, make_client):
    node = cluster.ppserver(2, extra=("-a", "-b", "127.255.255.255"))
    client = make_client(0, ppservers=(f"*:{node.port}",))
    wait_until(lambda: node.address in client.get_active_nodes(), 15, "the announced ppserver")
    assert client.submit(add_one, (41,)).result(timeout=30) == 42
    assert client.get_stats()[node.address].njobs == 1
    assert client.auto_ppservers == [(("0.0.0.0", node.port), ("255.255.255.255", node.port))]
