"""Which cipher a sealed channel uses: AES-256-GCM when both Hellos carry FLAG_AES_GCM, ChaCha20-Poly1305
otherwise, no cipher when both agreed to a plain channel; the choice bound into the proofs, so a man in the
middle who flips the flag fails authentication; unknown flag bits ignored but authenticated; and an endpoint
that never heard of AES-256-GCM (ppft 2.0) still talking to one that offers it."""

from __future__ import annotations

import hashlib
from collections.abc import Callable

import pytest
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM, ChaCha20Poly1305

from ppft_protocol import (
    AES_256_GCM,
    CHACHA20_POLY1305,
    Auth,
    AuthenticationError,
    AuthFailed,
    Connection,
    Established,
    Event,
    Hello,
    Job,
    JobBatch,
    Message,
    Result,
    ResultBatch,
    Role,
    State,
    channel,
)
from ppft_protocol.framing import encode_frame_header, encode_opening
from ppft_protocol.messages import encode_message

Pair = tuple[Connection, Connection]
Established_ = Callable[..., Pair]
MakePair = Callable[..., Pair]
Pump = Callable[[Connection, Connection], tuple[list[Event], list[Event]]]

SECRET = b"cipher test secret"
DIGEST = hashlib.sha256(b"f").digest()
NONCE_C = bytes(range(32))
NONCE_S = bytes(range(32, 64))
JOBS = JobBatch((Job(1, DIGEST, b"args-1"),))


def frame(message: Message) -> bytes:
    body = b"".join(encode_message(message))
    return encode_frame_header(message.TYPE, len(body)) + body


def ciphers_of(events: list[Event]) -> list[str]:
    return [e.cipher for e in events if isinstance(e, Established)]


# -- the negotiation matrix -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "client_aes, server_aes, cipher",
    [
        (True, True, AES_256_GCM),
        (True, False, CHACHA20_POLY1305),
        (False, True, CHACHA20_POLY1305),
        (False, False, CHACHA20_POLY1305),
    ],
)
def test_aes_gcm_is_used_only_when_both_sides_offer_it(
    pair_factory: MakePair, pump_bytes: Pump, client_aes: bool, server_aes: bool, cipher: str
) -> None:
    client, server = pair_factory(client_aes_gcm=client_aes, server_aes_gcm=server_aes)
    client_events, server_events = pump_bytes(client, server)
    assert ciphers_of(client_events) == ciphers_of(server_events) == [cipher]
    assert client.cipher == server.cipher == cipher
    assert client.sealed and server.sealed


@pytest.mark.parametrize("client_plain, server_plain", [(True, False), (False, True)])
def test_one_side_allowing_plain_keeps_the_aes_gcm_seal(
    pair_factory: MakePair, pump_bytes: Pump, client_plain: bool, server_plain: bool
) -> None:
    client, server = pair_factory(
        aes_gcm=True, client_allow_plain=client_plain, server_allow_plain=server_plain
    )
    client_events, server_events = pump_bytes(client, server)
    assert ciphers_of(client_events) == ciphers_of(server_events) == [AES_256_GCM]


def test_plain_channel_agreed_by_both_wins_over_aes_gcm_offered_by_both(
    pair_factory: MakePair, pump_bytes: Pump
) -> None:
    client, server = pair_factory(aes_gcm=True, allow_plain=True)
    client_events, server_events = pump_bytes(client, server)
    assert ciphers_of(client_events) == ciphers_of(server_events) == [""]
    assert not client.sealed and not server.sealed
    client.send(JOBS)
    data = client.data_to_send()
    assert JOBS.jobs[0].args in data
    assert server.receive_data(data) == [JOBS]


def test_cipher_is_empty_before_the_handshake() -> None:
    assert Connection(Role.CLIENT, SECRET, aes_gcm=True).cipher == ""


def test_aes_gcm_offer_sets_bit_1_of_the_hello_flags() -> None:
    data = Connection(Role.CLIENT, SECRET, aes_gcm=True, allow_plain=True).data_to_send()
    assert data[-1] & ~Hello.FLAG_SPEAKS_V2 == Hello.FLAG_AES_GCM | Hello.FLAG_ALLOW_PLAIN == 0x03
    assert Connection(Role.CLIENT, SECRET).data_to_send()[-1] & ~Hello.FLAG_SPEAKS_V2 == 0
    assert Connection(Role.CLIENT, SECRET, aes_gcm=True, versions=(1, 1)).data_to_send()[-1] == 0x02


def test_established_without_a_cipher_means_what_it_meant_before_aes_gcm() -> None:
    assert Established(1, True, "peer").cipher == CHACHA20_POLY1305
    assert Established(1, False, "peer").cipher == ""
    assert Established(1, True, "peer") == Established(1, True, "peer", CHACHA20_POLY1305)
    assert Established(1, True, "peer") != Established(1, True, "peer", AES_256_GCM)


# -- a man in the middle flipping bit 1 -------------------------------------------------------------------


@pytest.mark.parametrize(
    "client_aes, server_aes", [(True, True), (False, False), (True, False)], ids=["clear", "set", "one"]
)
def test_flipped_aes_flag_in_the_server_hello_fails_authentication(
    pair_factory: MakePair, client_aes: bool, server_aes: bool
) -> None:
    client, server = pair_factory(client_aes_gcm=client_aes, server_aes_gcm=server_aes)
    to_client = bytearray(server.data_to_send())
    to_client[-1] ^= Hello.FLAG_AES_GCM  # the server Hello's flags byte, last of its first batch
    assert client.receive_data(bytes(to_client)) == []
    with pytest.raises(AuthenticationError, match="client failed to prove"):
        server.receive_data(client.data_to_send())
    assert server.state is State.CLOSED
    assert server.data_to_send() == frame(AuthFailed())  # the refusal, and nothing sealed under any cipher


@pytest.mark.parametrize(
    "client_aes, server_aes", [(True, True), (False, False), (False, True)], ids=["clear", "set", "one"]
)
def test_flipped_aes_flag_in_the_client_hello_fails_authentication(
    pair_factory: MakePair, client_aes: bool, server_aes: bool
) -> None:
    client, server = pair_factory(client_aes_gcm=client_aes, server_aes_gcm=server_aes)
    to_server = bytearray(client.data_to_send())
    to_server[-1] ^= Hello.FLAG_AES_GCM  # the client Hello's flags byte, last of its first batch
    assert server.receive_data(bytes(to_server)) == []
    client.receive_data(server.data_to_send())
    with pytest.raises(AuthenticationError, match="client failed to prove"):
        server.receive_data(client.data_to_send())
    assert server.state is State.CLOSED
    assert server.data_to_send() == frame(AuthFailed())


def test_flipped_aes_flag_in_both_hellos_fails_authentication(pair_factory: MakePair) -> None:
    """Upgrading (or downgrading) both sides at once does not help: each proves what it itself sent."""
    client, server = pair_factory()
    to_server = bytearray(client.data_to_send())
    to_client = bytearray(server.data_to_send())
    to_server[-1] ^= Hello.FLAG_AES_GCM
    to_client[-1] ^= Hello.FLAG_AES_GCM
    assert server.receive_data(bytes(to_server)) == []
    assert client.receive_data(bytes(to_client)) == []
    with pytest.raises(AuthenticationError):
        server.receive_data(client.data_to_send())


# -- unknown flag bits and older peers --------------------------------------------------------------------


def _raw_client_to(server: Connection, flags_c: int) -> list[Event]:
    """Handshake a server with a hand-made client that sends `flags_c` and proves it, as the spec says."""
    server_hello = server.data_to_send()
    flags_s = server_hello[-1]
    proof_c = channel.proof(channel.auth_key(SECRET), "client", 1, NONCE_C, NONCE_S, flags_c, flags_s)
    return server.receive_data(
        encode_opening(1, 1, "raw client") + frame(Hello(NONCE_C, flags_c)) + frame(Auth(proof_c))
    )


@pytest.mark.parametrize(
    "flags_c, cipher",
    [(0xF8, CHACHA20_POLY1305), (0xF8 | Hello.FLAG_AES_GCM, AES_256_GCM), (0x80, CHACHA20_POLY1305)],
    ids=["unknown-bits", "unknown-bits-and-aes", "bit-7"],
)
def test_unknown_flag_bits_are_ignored_but_the_aes_bit_still_counts(flags_c: int, cipher: str) -> None:
    server = Connection(Role.SERVER, SECRET, nonce=NONCE_S, aes_gcm=True)
    assert ciphers_of(_raw_client_to(server, flags_c)) == [cipher]


def test_aes_offer_to_a_peer_that_ignores_bit_1_talks_chacha20_with_the_2_0_keys(
    pair_factory: MakePair, pump_bytes: Pump
) -> None:
    """A ppft 2.0 peer neither sets nor reads bit 1; it derives ChaCha20-Poly1305 keys as it always did."""
    client, server = pair_factory(
        SECRET, SECRET, client_aes_gcm=True, client_nonce=NONCE_C, server_nonce=NONCE_S
    )
    pump_bytes(client, server)
    assert client.cipher == CHACHA20_POLY1305
    c2s, _ = channel.session_keys(
        SECRET, client.version, NONCE_C, NONCE_S
    )  # the 2.0 derivation, no cipher in it
    client.send(JOBS)
    sealed = client.data_to_send()
    nonce = bytes(12)
    assert ChaCha20Poly1305(c2s).decrypt(nonce, sealed[5:], sealed[:5]) == b"".join(encode_message(JOBS))


def test_aes_and_chacha20_keys_differ_for_the_same_handshake() -> None:
    chacha = channel.session_keys(SECRET, 1, NONCE_C, NONCE_S)
    aes = channel.session_keys(SECRET, 1, NONCE_C, NONCE_S, AES_256_GCM)
    assert chacha == channel.session_keys(SECRET, 1, NONCE_C, NONCE_S, CHACHA20_POLY1305)
    assert len({*chacha, *aes}) == 4


def test_session_keys_refuse_an_unknown_cipher() -> None:
    with pytest.raises(ValueError, match="unknown cipher 'aes-128-gcm'"):
        channel.session_keys(SECRET, 1, NONCE_C, NONCE_S, "aes-128-gcm")


# -- sealed traffic under AES-256-GCM ---------------------------------------------------------------------


def test_aes_gcm_channel_carries_large_jobs_and_results_both_ways(established: Established_) -> None:
    client, server = established(aes_gcm=True)
    assert client.cipher == AES_256_GCM
    args = bytes(range(256)) * 4096 + b"tail"  # 1 MiB and a bit
    jobs = JobBatch((Job(7, DIGEST, args), Job(8, DIGEST, b"small")))
    client.send(jobs)
    wire = client.data_to_send()
    assert args[:4096] not in wire
    assert server.receive_data(wire) == [jobs]
    results = ResultBatch(
        (Result(7, True, args[::-1], "out\n", 0.5, 0.25), Result(8, True, b"v", "", 0.0, 0.0))
    )
    server.send(results)
    assert client.receive_data(server.data_to_send()) == [results]


def test_aes_gcm_frames_are_aes_gcm_under_the_aes_keys_not_chacha20(
    pair_factory: MakePair, pump_bytes: Pump
) -> None:
    client, server = pair_factory(SECRET, SECRET, aes_gcm=True, client_nonce=NONCE_C, server_nonce=NONCE_S)
    pump_bytes(client, server)
    chacha_c2s, _ = channel.session_keys(SECRET, client.version, NONCE_C, NONCE_S)
    aes_c2s, _ = channel.session_keys(SECRET, client.version, NONCE_C, NONCE_S, AES_256_GCM)
    client.send(JOBS)
    sealed = client.data_to_send()
    assert AESGCM(aes_c2s).decrypt(bytes(12), sealed[5:], sealed[:5]) == b"".join(encode_message(JOBS))
    with pytest.raises(InvalidTag):
        ChaCha20Poly1305(chacha_c2s).decrypt(bytes(12), sealed[5:], sealed[:5])
    with pytest.raises(InvalidTag):
        ChaCha20Poly1305(aes_c2s).decrypt(bytes(12), sealed[5:], sealed[:5])
