"""The handshake, driven through `Connection` only: the matrix of secrets, version ranges and sealing
choices; a peer that skips authentication or plays the wrong role; the size cap switching exactly after the
frame that authenticates; and misuse of the API on this side."""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Callable

import pytest

from ppft_protocol import (
    PROTOCOL_VERSIONS,
    Auth,
    AuthenticationError,
    AuthFailed,
    AuthOk,
    Connection,
    DecodeError,
    Established,
    Event,
    FrameTooLarge,
    FunctionBody,
    Heartbeat,
    Hello,
    Job,
    JobBatch,
    LocalProtocolError,
    Message,
    ProtocolMismatchError,
    RemoteProtocolError,
    Result,
    ResultBatch,
    Role,
    State,
    __version__,
    channel,
)
from ppft_protocol.framing import encode_frame_header, encode_opening
from ppft_protocol.messages import encode_message

Pair = tuple[Connection, Connection]
Established_ = Callable[..., Pair]
MakePair = Callable[..., Pair]
Pump = Callable[[Connection, Connection], tuple[list[Event], list[Event]]]

DIGEST = hashlib.sha256(b"f").digest()
NONCE_C = bytes(range(32))
NONCE_S = bytes(range(32, 64))
JOBS = JobBatch((Job(1, DIGEST, b"args-1"), Job(2, DIGEST, b"args-2")))


def frame(message: Message) -> bytes:
    """An unsealed frame, as a peer that ignores the state machine would write it."""
    body = b"".join(encode_message(message))
    return encode_frame_header(message.TYPE, len(body)) + body


def opening(low: int = 1, high: int = 1) -> bytes:
    return encode_opening(low, high, "raw test peer")


def frame_types(data: bytes, *, skip_opening: bool = False) -> list[int]:
    off = 0
    if skip_opening:
        off = 8 + struct.unpack_from(">Q", data, 0)[0]
    types = []
    while off < len(data):
        length, ftype = struct.unpack_from(">IB", data, off)
        types.append(ftype)
        off += 5 + length
    return types


# -- the matrix: secrets ----------------------------------------------------------------------------------


def test_right_secret_establishes_both_sides(pair_factory: MakePair, pump_bytes: Pump) -> None:
    client, server = pair_factory()
    client_events, server_events = pump_bytes(client, server)
    default_comment = f"ppft {__version__}; not compatible with ppft 1.x"
    assert client_events == [Established(PROTOCOL_VERSIONS[1], True, default_comment)]
    assert server_events == [Established(PROTOCOL_VERSIONS[1], True, default_comment)]
    assert client.state is server.state is State.ESTABLISHED


def test_established_pair_carries_jobs_and_results_both_ways(established: Established_) -> None:
    client, server = established()
    client.send(JOBS)
    assert server.receive_data(client.data_to_send()) == [JOBS]
    results = ResultBatch((Result(1, True, b"v", "out"), Result(2, False, b"", "", 0, 0, "E", "m", "tb")))
    server.send(results)
    assert client.receive_data(server.data_to_send()) == [results]


def test_text_secret_is_its_utf8_bytes(pair_factory: MakePair, pump_bytes: Pump) -> None:
    client, server = pair_factory(client_secret="s\u00e9cret", server_secret="s\u00e9cret".encode())
    pump_bytes(client, server)
    assert client.state is server.state is State.ESTABLISHED


def test_handshake_completes_when_fed_one_byte_at_a_time(pair_factory: MakePair) -> None:
    client, server = pair_factory()
    events: list[Event] = []
    for _ in range(3):
        for src, dst in ((client, server), (server, client)):
            data = src.data_to_send()
            for i in range(len(data)):
                events += dst.receive_data(data[i : i + 1])
    assert [type(e) for e in events] == [Established, Established]


def test_wrong_secret_server_queues_exactly_one_auth_failed_and_closes(pair_factory: MakePair) -> None:
    client, server = pair_factory(client_secret=b"wrong", server_secret=b"right")
    server_opening = server.data_to_send()
    client.receive_data(server_opening)  # the client answers with its proof
    with pytest.raises(AuthenticationError, match="secrets differ"):
        server.receive_data(client.data_to_send())
    assert server.state is State.CLOSED
    refusal = server.data_to_send()
    assert frame_types(refusal) == [AuthFailed.TYPE]
    assert server.data_to_send() == b""


def test_wrong_secret_client_raises_authentication_error(pair_factory: MakePair) -> None:
    client, server = pair_factory(client_secret=b"wrong", server_secret=b"right")
    client.receive_data(server.data_to_send())
    with pytest.raises(AuthenticationError):
        server.receive_data(client.data_to_send())
    with pytest.raises(AuthenticationError, match="secrets differ; use the same secret on both"):
        client.receive_data(server.data_to_send())
    assert client.state is State.CLOSED


def test_wrong_secret_emits_no_event_on_either_side(pair_factory: MakePair) -> None:
    client, server = pair_factory(client_secret=b"a", server_secret=b"b")
    assert client.receive_data(server.data_to_send()) == []
    with pytest.raises(AuthenticationError):
        server.receive_data(client.data_to_send() + frame(JOBS))
    with pytest.raises(AuthenticationError):
        client.receive_data(server.data_to_send())


def test_client_refuses_a_server_whose_proof_is_made_with_another_secret() -> None:
    client = Connection(Role.CLIENT, b"right", nonce=NONCE_C)
    client.data_to_send()
    client.receive_data(opening() + frame(Hello(NONCE_S)))
    assert frame_types(client.data_to_send()) == [Auth.TYPE]
    forged = channel.proof(channel.auth_key(b"wrong"), "server", 1, NONCE_C, NONCE_S, 0, 0)
    with pytest.raises(AuthenticationError, match="server failed to prove it knows the secret"):
        client.receive_data(frame(AuthOk(forged)))
    assert client.state is State.CLOSED
    assert client.data_to_send() == b""


def test_client_refuses_its_own_proof_reflected_back_as_the_server_proof() -> None:
    client = Connection(Role.CLIENT, b"secret")
    client.data_to_send()
    client.receive_data(opening() + frame(Hello(NONCE_S)))
    auth = client.data_to_send()
    client_proof = auth[5:]
    with pytest.raises(AuthenticationError):
        client.receive_data(frame(AuthOk(client_proof)))


def test_server_refuses_a_proof_replayed_from_another_connection(pair_factory: MakePair) -> None:
    client, server = pair_factory(client_nonce=NONCE_C)
    client.receive_data(server.data_to_send())
    old_proof_frames = client.data_to_send()  # opening + Hello + Auth, all for the first server's nonce
    second = Connection(Role.SERVER, b"correct horse battery staple")
    with pytest.raises(AuthenticationError):
        second.receive_data(old_proof_frames)


def test_proofs_bind_the_role() -> None:
    key = channel.auth_key(b"s")
    assert channel.proof(key, "client", 1, NONCE_C, NONCE_S, 0, 0) != channel.proof(
        key, "server", 1, NONCE_C, NONCE_S, 0, 0
    )


# -- the matrix: versions ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "client_versions, server_versions, agreed",
    [((1, 1), (1, 1), 1), ((1, 3), (2, 5), 3), ((2, 5), (1, 3), 3), ((1, 9), (4, 4), 4)],
)
def test_overlapping_version_ranges_agree_on_the_highest_common_version(
    pair_factory: MakePair,
    pump_bytes: Pump,
    client_versions: tuple[int, int],
    server_versions: tuple[int, int],
    agreed: int,
) -> None:
    client, server = pair_factory(client_versions=client_versions, server_versions=server_versions)
    client_events, server_events = pump_bytes(client, server)
    assert [e.version for e in client_events if isinstance(e, Established)] == [agreed]
    assert [e.version for e in server_events if isinstance(e, Established)] == [agreed]


@pytest.mark.parametrize("client_versions, server_versions", [((1, 1), (2, 3)), ((4, 6), (1, 3))])
def test_disjoint_version_ranges_fail_on_both_sides_naming_both_ranges(
    pair_factory: MakePair, client_versions: tuple[int, int], server_versions: tuple[int, int]
) -> None:
    client, server = pair_factory(client_versions=client_versions, server_versions=server_versions)
    to_server, to_client = client.data_to_send(), server.data_to_send()
    c_range = f"{client_versions[0]}-{client_versions[1]}"
    s_range = f"{server_versions[0]}-{server_versions[1]}"
    with pytest.raises(
        ProtocolMismatchError, match=f"speaks ppft-protocol {s_range}, the peer speaks {c_range}"
    ):
        server.receive_data(to_server)
    with pytest.raises(
        ProtocolMismatchError, match=f"speaks ppft-protocol {c_range}, the peer speaks {s_range}"
    ):
        client.receive_data(to_client)
    assert client.state is server.state is State.CLOSED


def test_version_is_bound_into_the_proofs() -> None:
    key = channel.auth_key(b"s")
    assert channel.proof(key, "client", 2, NONCE_C, NONCE_S, 0, 0, opening(1, 2), opening(1, 2)) != (
        channel.proof(key, "client", 3, NONCE_C, NONCE_S, 0, 0, opening(1, 2), opening(1, 2))
    )


def test_downgraded_opening_makes_the_proofs_disagree(pair_factory: MakePair) -> None:
    """Between two version-1 speakers (no downgrade sentinel), a rewritten range still shows: the two sides
    then pick different versions, and their proofs disagree."""
    client, server = pair_factory(client_versions=(1, 1), server_versions=(1, 3))
    to_server = client.data_to_send()
    tampered = opening(2, 3) + to_server[8 + struct.unpack_from(">Q", to_server)[0] :]
    server.receive_data(tampered)  # the server now believes the client speaks version 3
    client.receive_data(server.data_to_send())
    with pytest.raises(AuthenticationError):
        server.receive_data(client.data_to_send())


# -- the matrix: sealed or plain --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "client_plain, server_plain, sealed",
    [(False, False, True), (True, False, True), (False, True, True), (True, True, False)],
)
def test_channel_is_plain_only_when_both_sides_allow_it(
    pair_factory: MakePair, pump_bytes: Pump, client_plain: bool, server_plain: bool, sealed: bool
) -> None:
    client, server = pair_factory(client_allow_plain=client_plain, server_allow_plain=server_plain)
    client_events, server_events = pump_bytes(client, server)
    assert [e.sealed for e in client_events if isinstance(e, Established)] == [sealed]
    assert [e.sealed for e in server_events if isinstance(e, Established)] == [sealed]
    client.send(JOBS)
    data = client.data_to_send()
    assert (JOBS.jobs[0].args in data) is not sealed
    assert server.receive_data(data) == [JOBS]


def test_flags_are_bound_into_the_proofs(pair_factory: MakePair) -> None:
    """A man in the middle that sets the allow-plain flag in both Hellos cannot switch sealing off."""
    client, server = pair_factory(client_allow_plain=True, server_allow_plain=False)
    to_client = bytearray(server.data_to_send())
    assert to_client[-1] == Hello.FLAG_SPEAKS_V2  # the server Hello's flags byte, last of the first batch
    to_client[-1] |= Hello.FLAG_ALLOW_PLAIN
    client.receive_data(bytes(to_client))
    with pytest.raises(AuthenticationError):
        server.receive_data(client.data_to_send())


# -- a peer that skips authentication ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "early",
    [JOBS, FunctionBody(DIGEST, "f", ("def f(): pass",)), ResultBatch(()), Heartbeat()],
    ids=lambda m: type(m).__name__,
)
def test_message_before_authentication_is_refused_with_no_event(early: Message) -> None:
    server = Connection(Role.SERVER, b"secret")
    assert server.receive_data(opening() + frame(Hello(NONCE_C))) == []
    with pytest.raises(RemoteProtocolError, match="refused before authentication"):
        server.receive_data(frame(early))
    assert server.state is State.CLOSED
    assert frame_types(server.data_to_send(), skip_opening=True) == [Hello.TYPE]


def test_job_in_the_same_chunk_as_the_hello_is_refused(pair_factory: MakePair) -> None:
    server = Connection(Role.SERVER, b"secret")
    with pytest.raises(RemoteProtocolError, match="JobBatch while this server is in state await-auth"):
        server.receive_data(opening() + frame(Hello(NONCE_C)) + frame(JOBS))


def test_job_instead_of_the_hello_is_refused() -> None:
    server = Connection(Role.SERVER, b"secret")
    with pytest.raises(RemoteProtocolError, match="JobBatch while this server is in state await-hello"):
        server.receive_data(opening() + frame(JOBS))


def test_job_before_the_opening_is_refused_as_not_speaking_the_protocol() -> None:
    server = Connection(Role.SERVER, b"secret")
    with pytest.raises(DecodeError, match="did not open with the ppft protocol"):
        server.receive_data(frame(JOBS) + bytes(300))


def test_malformed_job_before_authentication_is_refused_without_being_parsed() -> None:
    server = Connection(Role.SERVER, b"secret")
    garbage = encode_frame_header(JobBatch.TYPE, 4) + b"\xff\xff\xff\xff"
    with pytest.raises(RemoteProtocolError, match="refused before authentication"):
        server.receive_data(opening() + frame(Hello(NONCE_C)) + garbage)


def test_client_refuses_jobs_from_a_server_that_never_authenticated() -> None:
    client = Connection(Role.CLIENT, b"secret")
    with pytest.raises(RemoteProtocolError, match="refused before authentication"):
        client.receive_data(opening() + frame(Hello(NONCE_S)) + frame(JOBS))


def test_client_refuses_auth_ok_before_the_hello() -> None:
    client = Connection(Role.CLIENT, b"secret")
    with pytest.raises(RemoteProtocolError, match="AuthOk while this client is in state await-hello"):
        client.receive_data(opening() + frame(AuthOk(bytes(32))))


def test_server_refuses_a_client_playing_the_server_role() -> None:
    server = Connection(Role.SERVER, b"secret")
    with pytest.raises(RemoteProtocolError, match="AuthOk while this server"):
        server.receive_data(opening() + frame(Hello(NONCE_C)) + frame(AuthOk(bytes(32))))


def test_unknown_frame_type_during_the_handshake_is_a_decode_error() -> None:
    server = Connection(Role.SERVER, b"secret")
    with pytest.raises(DecodeError, match="unknown frame type 0x99"):
        server.receive_data(opening() + encode_frame_header(0x99, 0))


def test_handshake_message_after_the_handshake_is_refused(established: Established_) -> None:
    _client, server = established(allow_plain=True)
    with pytest.raises(RemoteProtocolError, match="Hello after the handshake"):
        server.receive_data(frame(Hello(NONCE_C)))


def test_second_hello_is_refused() -> None:
    server = Connection(Role.SERVER, b"secret")
    with pytest.raises(RemoteProtocolError, match="Hello while this server is in state await-auth"):
        server.receive_data(opening() + frame(Hello(NONCE_C)) + frame(Hello(NONCE_C)))


# -- size caps across the handshake ----------------------------------------------------------------------


def test_oversized_frame_before_authentication_is_refused_on_its_header() -> None:
    server = Connection(Role.SERVER, b"secret")
    with pytest.raises(FrameTooLarge, match="before authentication"):
        server.receive_data(opening() + frame(Hello(NONCE_C)) + encode_frame_header(Auth.TYPE, 4097))


def test_big_frame_in_the_same_chunk_as_the_authenticating_frame_is_accepted(
    pair_factory: MakePair,
) -> None:
    """The server answers AuthOk and, in the same write, a 100 KiB sealed frame: the client must read that
    frame under the large cap, which applies from the frame right after AuthOk."""
    client, server = pair_factory()
    client.receive_data(server.data_to_send())
    assert [type(e) for e in server.receive_data(client.data_to_send())] == [Established]
    big = JobBatch((Job(1, DIGEST, b"x" * 100000),))
    server.send(big)
    client_events = client.receive_data(server.data_to_send())
    assert client_events[1:] == [big]
    assert isinstance(client_events[0], Established)


def test_big_frame_right_after_the_client_auth_is_accepted_by_the_server() -> None:
    """A client cannot send sealed frames before AuthOk, but a plain-channel peer's bytes following its
    Auth in one chunk must be read under the large cap, not the handshake one."""
    client = Connection(Role.CLIENT, b"secret", allow_plain=True, nonce=NONCE_C)
    server = Connection(Role.SERVER, b"secret", allow_plain=True, nonce=NONCE_S)
    client.receive_data(server.data_to_send())
    big = JobBatch((Job(1, DIGEST, b"x" * 100000),))
    events = server.receive_data(client.data_to_send() + frame(big))
    assert [type(e) for e in events] == [Established, JobBatch]


def test_max_frame_size_applies_after_authentication(established: Established_) -> None:
    client, server = established(max_frame_size=10000)
    client.send(JobBatch((Job(1, DIGEST, b"x" * 20000),)))
    with pytest.raises(FrameTooLarge, match="after authentication"):
        server.receive_data(client.data_to_send())


# -- local misuse -----------------------------------------------------------------------------------------


def test_sending_before_the_handshake_is_a_local_error(pair_factory: MakePair) -> None:
    client, _ = pair_factory()
    with pytest.raises(LocalProtocolError, match="cannot send JobBatch: the connection is await-opening"):
        client.send(JOBS)


def test_sending_a_handshake_message_after_the_handshake_is_a_local_error(established: Established_) -> None:
    client, _ = established()
    with pytest.raises(LocalProtocolError, match="belongs to the handshake"):
        client.send(Hello(NONCE_C))


def test_receiving_on_a_closed_connection_is_a_local_error(established: Established_) -> None:
    _, server = established()
    server.receive_data(b"")
    with pytest.raises(LocalProtocolError, match="closed"):
        server.receive_data(b"more")


def test_unencodable_message_is_a_local_error_and_leaves_the_connection_usable(
    established: Established_,
) -> None:
    client, server = established()
    with pytest.raises(LocalProtocolError, match="digest must be 32 bytes"):
        client.send(JobBatch((Job(1, b"short", b""),)))
    client.send(JOBS)
    assert server.receive_data(client.data_to_send()) == [JOBS]


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"secret": b""}, "secret must not be empty"),
        ({"secret": b"s", "nonce": b"short"}, "nonce must be 32 bytes"),
        ({"secret": b"s", "versions": (2, 1)}, "bad version range"),
    ],
)
def test_bad_connection_arguments_are_local_errors(kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(LocalProtocolError, match=match):
        Connection(Role.CLIENT, **kwargs)  # type: ignore[arg-type]
