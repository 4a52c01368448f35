"""Version 2: a dial-in worker says so in its Hello (flag WORKER), then proves the server's workers secret.

The flag is bound into both proofs like every flag, so a client's proof never passes as a worker's (nor the
reverse), and a man in the middle who sets or clears it makes the handshake fail. With version 1 the flag
means nothing: the peer proves the one secret, as ppft 2.0 did.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from ppft_protocol import AuthenticationError, Connection, Established, Event, Hello, NodeInfo, State

MakePair = Callable[..., tuple[Connection, Connection]]
Pump = Callable[[Connection, Connection], tuple[list[Event], list[Event]]]

CLIENTS = b"the client secret"
WORKERS = b"the workers secret"


def established(events: list[object]) -> list[Established]:
    return [e for e in events if isinstance(e, Established)]


def test_a_worker_proves_the_workers_secret(pair_factory: MakePair, pump_bytes: Pump) -> None:
    worker, server = pair_factory(WORKERS, CLIENTS, client_worker=True, server_worker_secret=WORKERS)
    worker_events, server_events = pump_bytes(worker, server)
    assert established(worker_events) and established(server_events)
    assert server.version == 2
    assert server.peer_worker
    worker.send(NodeInfo("worker", 4, "2", "w"))  # the session keys are the workers secret's, both ways
    assert server.receive_data(worker.data_to_send()) == [NodeInfo("worker", 4, "2", "w")]
    server.send(NodeInfo("server", 0, "2", "s"))
    assert worker.receive_data(server.data_to_send()) == [NodeInfo("server", 0, "2", "s")]


def test_a_worker_with_the_client_secret_is_refused(pair_factory: MakePair, pump_bytes: Pump) -> None:
    worker, server = pair_factory(CLIENTS, CLIENTS, client_worker=True, server_worker_secret=WORKERS)
    with pytest.raises(AuthenticationError, match="worker failed to prove it knows the workers secret"):
        pump_bytes(worker, server)
    assert server.state is State.CLOSED


def test_a_client_cannot_use_the_workers_secret(pair_factory: MakePair, pump_bytes: Pump) -> None:
    client, server = pair_factory(WORKERS, CLIENTS, server_worker_secret=WORKERS)
    with pytest.raises(AuthenticationError, match="client failed to prove"):
        pump_bytes(client, server)
    assert not server.peer_worker


def test_no_workers_secret_a_worker_proves_the_secret(pair_factory: MakePair, pump_bytes: Pump) -> None:
    """The server's owner then decides whether it admits workers at all (ppserver --accept-workers)."""
    worker, server = pair_factory(CLIENTS, CLIENTS, client_worker=True)
    _, server_events = pump_bytes(worker, server)
    assert established(server_events)
    assert server.peer_worker


def test_a_plain_client_is_not_a_worker(pair_factory: MakePair, pump_bytes: Pump) -> None:
    client, server = pair_factory(CLIENTS, CLIENTS, server_worker_secret=WORKERS)
    _, server_events = pump_bytes(client, server)
    assert established(server_events)
    assert not server.peer_worker


def test_with_version_1_the_flag_means_nothing(pair_factory: MakePair, pump_bytes: Pump) -> None:
    """A version-1 exchange keeps version 1's rules: one secret, whatever flags the Hello carries."""
    worker, server = pair_factory(CLIENTS, CLIENTS, client_worker=True, client_versions=(1, 1),
                                  server_worker_secret=WORKERS)  # fmt: skip
    _, server_events = pump_bytes(worker, server)
    assert [e.version for e in established(server_events)] == [1]
    assert not server.peer_worker


@pytest.mark.parametrize("worker", [True, False])
def test_the_worker_flag_is_bound_into_the_proofs(pair_factory: MakePair, worker: bool) -> None:
    """A man in the middle who flips the flag in the client's Hello makes the server refuse the proof."""
    secret = WORKERS if worker else CLIENTS
    client, server = pair_factory(secret, CLIENTS, client_worker=worker, server_worker_secret=WORKERS)
    hello = bytearray(client.data_to_send())
    assert hello[-1] & Hello.FLAG_WORKER == (Hello.FLAG_WORKER if worker else 0)  # the Hello's flags byte
    hello[-1] ^= Hello.FLAG_WORKER
    server.receive_data(bytes(hello))
    client.receive_data(server.data_to_send())
    with pytest.raises(AuthenticationError):
        server.receive_data(client.data_to_send())


def test_an_empty_workers_secret_is_refused() -> None:
    from ppft_protocol import Connection, LocalProtocolError, Role

    with pytest.raises(LocalProtocolError, match="workers secret must not be empty"):
        Connection(Role.SERVER, CLIENTS, worker_secret=b"")
