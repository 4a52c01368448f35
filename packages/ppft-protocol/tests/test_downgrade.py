"""A man in the middle who rewrites openings cannot make two peers settle on a lower protocol version.

Version 2's proofs bind both openings as they crossed the wire; version 1's cannot change (ppft 2.0.0
computes them), so both Hellos carry the downgrade sentinel (FLAG_SPEAKS_V2), which version-1 proofs bind
unread: a side that speaks version 2, sees the sentinel on its peer and yet agrees on version 1 refuses.
Every pair of ranges (1-1 as ppft 2.0.0, 1-2 as this release, 2-2, and a hypothetical later 1-3), every
direction of tampering and every forged range is tried through `Connection` objects: the connection is
either refused on both sides, or it is exactly the connection the two would have made untouched.
"""

from __future__ import annotations

import itertools
import struct
from collections.abc import Callable

import pytest

from ppft_protocol import (
    AuthenticationError,
    AuthFailed,
    Connection,
    DowngradeError,
    Established,
    Hello,
    ProtocolError,
    ProtocolMismatchError,
    Role,
    State,
    channel,
)
from ppft_protocol.connection import DOWNGRADE_REASON
from ppft_protocol.framing import encode_opening
from ppft_protocol.messages import decode_message

SECRET = b"downgrade test secret"
RANGES = [(1, 1), (1, 2), (2, 2), (1, 3)]
"""1-1: a ppft 2.0.0 peer (no sentinel); 1-2: this release; 2-2: a peer that dropped version 1; 1-3: later."""

Rewrite = Callable[[bytes], bytes]


def _split_opening(data: bytes) -> tuple[bytes, bytes]:
    (length,) = struct.unpack_from(">Q", data, 0)
    return data[: 8 + length], data[8 + length :]


def forge_range(low: int, high: int) -> Rewrite:
    """A rewrite of an opening's range, keeping its comment."""

    def rewrite(opening: bytes) -> bytes:
        text = opening[8:].decode("ascii")
        comment = text[text.index("(") + 1 : -1]
        return encode_opening(low, high, comment)

    return rewrite


def clear_flags(mask: int) -> Rewrite:
    """A rewrite of the Hello frame that clears the flag bits in `mask`."""

    def rewrite(hello: bytes) -> bytes:
        assert hello[4] == Hello.TYPE
        return hello[:-1] + bytes([hello[-1] & ~mask & 0xFF])

    return rewrite


class Outcome:
    """What each side ended with: the version it established, or the error it raised."""

    def __init__(self) -> None:
        self.established: dict[str, int] = {}
        self.errors: dict[str, ProtocolError] = {}
        self.refusals: list[AuthFailed] = []  # AuthFailed frames the server sent

    def __repr__(self) -> str:
        return f"Outcome(established={self.established}, errors={self.errors})"


def handshake(
    client: Connection,
    server: Connection,
    *,
    c2s_opening: Rewrite | None = None,
    s2c_opening: Rewrite | None = None,
    c2s_hello: Rewrite | None = None,
    s2c_hello: Rewrite | None = None,
) -> Outcome:
    """Run the handshake through a man in the middle who applies the given rewrites."""
    outcome = Outcome()
    ends = {"client": client, "server": server}
    rewrites = {"client": (c2s_opening, c2s_hello), "server": (s2c_opening, s2c_hello)}
    first = {"client": True, "server": True}

    def deliver(sender: str, receiver: str) -> bool:
        data = ends[sender].data_to_send()
        if not data:
            return False
        if first[sender]:
            first[sender] = False
            opening, rest = _split_opening(data)
            opening_rw, hello_rw = rewrites[sender]
            if opening_rw is not None:
                opening = opening_rw(opening)
            (length,) = struct.unpack_from(">I", rest, 0)
            hello, rest = rest[: 5 + length], rest[5 + length :]
            if hello_rw is not None:
                hello = hello_rw(hello)
            data = opening + hello + rest
        if sender == "server":
            outcome.refusals += _auth_failed_frames(data)
        if receiver in outcome.errors or ends[receiver].state is State.CLOSED:
            return True
        try:
            for event in ends[receiver].receive_data(data):
                if isinstance(event, Established):
                    outcome.established[receiver] = event.version
        except ProtocolError as exc:
            outcome.errors[receiver] = exc
        return True

    for _ in range(20):
        moved = deliver("client", "server")
        moved = deliver("server", "client") or moved
        if not moved:
            return outcome
    raise AssertionError("the handshake never stopped talking")


def _auth_failed_frames(data: bytes) -> list[AuthFailed]:
    found = []
    off = 0
    if data.startswith(b"\0\0\0\0\0\0\0"):  # an opening first
        off = 8 + struct.unpack_from(">Q", data, 0)[0]
    while off + 5 <= len(data):
        length, ftype = struct.unpack_from(">IB", data, off)
        if ftype == AuthFailed.TYPE:
            message = decode_message(ftype, memoryview(data)[off + 5 : off + 5 + length])
            assert isinstance(message, AuthFailed)
            found.append(message)
        off += 5 + length
    return found


def pair(client_range: tuple[int, int], server_range: tuple[int, int]) -> tuple[Connection, Connection]:
    return (
        Connection(Role.CLIENT, SECRET, versions=client_range, comment="mitm test client"),
        Connection(Role.SERVER, SECRET, versions=server_range, comment="mitm test server"),
    )


def honest_version(client_range: tuple[int, int], server_range: tuple[int, int]) -> int | None:
    low = max(client_range[0], server_range[0])
    high = min(client_range[1], server_range[1])
    return high if low <= high else None


PAIRS = [(c, s) for c, s in itertools.product(RANGES, RANGES) if honest_version(c, s) is not None]
FORGED = [(1, 1), (1, 2), (2, 2), (1, 3), (2, 3), (3, 3), (1, 9)]


def _ids(value: object) -> str:
    return f"{value[0]}-{value[1]}" if isinstance(value, tuple) else str(value)


# -- untouched, every pair connects on its highest common version ----------------------------------------


@pytest.mark.parametrize("client_range, server_range", PAIRS, ids=_ids)
def test_untouched_handshake_agrees_on_the_highest_common_version(
    client_range: tuple[int, int], server_range: tuple[int, int]
) -> None:
    outcome = handshake(*pair(client_range, server_range))
    version = honest_version(client_range, server_range)
    assert outcome.errors == {}
    assert outcome.established == {"client": version, "server": version}


# -- one opening rewritten, in either direction, for every pair and every forged range --------------------


def _check_tampered(outcome: Outcome, client_range: tuple[int, int], server_range: tuple[int, int]) -> None:
    """Refused on both sides, or exactly the untouched connection (possible only with a version-1-only
    peer, whose proofs bind no opening: then the forged range changed nothing the two agree on)."""
    honest = honest_version(client_range, server_range)
    if outcome.established:
        assert outcome.errors == {}, outcome
        assert outcome.established == {"client": honest, "server": honest}, outcome
        assert honest == 1 and (1, 1) in (client_range, server_range), outcome
    else:
        assert outcome.errors, outcome  # at least one side names why; neither established


@pytest.mark.parametrize(
    "client_range, server_range, forged", [(c, s, f) for c, s in PAIRS for f in FORGED if f != c], ids=_ids
)
def test_rewritten_client_opening_never_connects_on_another_version(
    client_range: tuple[int, int], server_range: tuple[int, int], forged: tuple[int, int]
) -> None:
    outcome = handshake(*pair(client_range, server_range), c2s_opening=forge_range(*forged))
    _check_tampered(outcome, client_range, server_range)


@pytest.mark.parametrize(
    "client_range, server_range, forged", [(c, s, f) for c, s in PAIRS for f in FORGED if f != s], ids=_ids
)
def test_rewritten_server_opening_never_connects_on_another_version(
    client_range: tuple[int, int], server_range: tuple[int, int], forged: tuple[int, int]
) -> None:
    outcome = handshake(*pair(client_range, server_range), s2c_opening=forge_range(*forged))
    _check_tampered(outcome, client_range, server_range)


@pytest.mark.parametrize(
    "client_range, server_range, forged",
    [(c, s, f) for c, s in PAIRS for f in [(1, 1), (2, 2), (1, 2)] if not f == c == s],
    ids=_ids,
)
def test_both_openings_rewritten_alike_never_connect_on_another_version(
    client_range: tuple[int, int], server_range: tuple[int, int], forged: tuple[int, int]
) -> None:
    rewrite = forge_range(*forged)
    outcome = handshake(*pair(client_range, server_range), c2s_opening=rewrite, s2c_opening=rewrite)
    _check_tampered(outcome, client_range, server_range)


# -- the downgrade to version 1, named as such --------------------------------------------------------------


@pytest.mark.parametrize("client_range, server_range", [((1, 2), (1, 2)), ((1, 3), (1, 2)), ((1, 3), (1, 3))])
def test_both_openings_rewritten_to_version_1_is_refused_as_a_downgrade_on_both_sides(
    client_range: tuple[int, int], server_range: tuple[int, int]
) -> None:
    rewrite = forge_range(1, 1)
    outcome = handshake(*pair(client_range, server_range), c2s_opening=rewrite, s2c_opening=rewrite)
    assert outcome.established == {}
    assert set(outcome.errors) == {"client", "server"}
    for side, error in outcome.errors.items():
        assert isinstance(error, DowngradeError), (side, error)
        assert "the openings were altered in transit" in str(error)
        assert "man in the middle" in str(error) and "refused as a protocol downgrade" in str(error)
    assert [r.reason for r in outcome.refusals] == [DOWNGRADE_REASON]


def test_client_opening_rewritten_to_version_1_the_server_refuses_and_tells_the_client() -> None:
    outcome = handshake(*pair((1, 2), (1, 2)), c2s_opening=forge_range(1, 1))
    assert outcome.established == {}
    assert isinstance(outcome.errors["server"], DowngradeError)
    client_error = outcome.errors["client"]
    assert isinstance(client_error, DowngradeError)
    assert "server refused the handshake: protocol downgrade detected" in str(client_error)


def test_server_opening_rewritten_to_version_1_the_client_refuses_before_sending_its_proof() -> None:
    client, server = pair((1, 2), (1, 2))
    outcome = handshake(client, server, s2c_opening=forge_range(1, 1))
    assert outcome.established == {}
    assert isinstance(outcome.errors["client"], DowngradeError)
    assert client.state is State.CLOSED


@pytest.mark.parametrize("strip", ["client", "server", "both"])
def test_stripping_the_sentinel_too_breaks_the_version_1_proofs(strip: str) -> None:
    rewrite = forge_range(1, 1)
    clear = clear_flags(Hello.FLAG_SPEAKS_V2)
    outcome = handshake(
        *pair((1, 2), (1, 2)),
        c2s_opening=rewrite,
        s2c_opening=rewrite,
        c2s_hello=clear if strip in ("client", "both") else None,
        s2c_hello=clear if strip in ("server", "both") else None,
    )
    assert outcome.established == {}
    assert outcome.errors
    assert all(isinstance(e, (AuthenticationError, DowngradeError)) for e in outcome.errors.values())


def test_setting_the_sentinel_on_a_version_1_peer_breaks_the_proofs() -> None:
    """Forging the sentinel cannot turn an honest version-1 connection into a refusal the peers accept
    silently either: the flags are in the proofs, so the forged Hello makes the handshake fail."""

    def set_sentinel(hello: bytes) -> bytes:
        return hello[:-1] + bytes([hello[-1] | Hello.FLAG_SPEAKS_V2])

    outcome = handshake(*pair((1, 1), (1, 2)), c2s_hello=set_sentinel)
    assert outcome.established == {}
    assert outcome.errors


# -- a ppft 2.0.0 peer (versions 1-1, no sentinel) still connects, both ways --------------------------------


@pytest.mark.parametrize("old_side", ["client", "server"])
def test_ppft_2_0_0_peer_connects_on_version_1(old_side: str) -> None:
    old, new = (1, 1), (1, 2)
    client, server = pair(old if old_side == "client" else new, old if old_side == "server" else new)
    flags: dict[str, int] = {}

    def seen(side: str) -> Rewrite:
        def record(hello: bytes) -> bytes:
            flags[side] = hello[-1]
            return hello

        return record

    outcome = handshake(client, server, c2s_hello=seen("client"), s2c_hello=seen("server"))
    assert outcome.errors == {}
    assert outcome.established == {"client": 1, "server": 1}
    # the 2.0.0 peer's Hello carries no sentinel (its flags byte is what ppft 2.0.0 sends); ours does
    assert flags[old_side] == 0
    assert flags["server" if old_side == "client" else "client"] == Hello.FLAG_SPEAKS_V2


def test_ppft_2_0_0_proofs_are_the_version_1_proofs_over_the_flags_as_sent() -> None:
    """The new side computes exactly ppft 2.0.0's proof: version 1, no opening, both flag bytes."""
    nonce_c, nonce_s = bytes(32), bytes(range(32))
    client = Connection(Role.CLIENT, SECRET, versions=(1, 1), nonce=nonce_c)
    server = Connection(Role.SERVER, SECRET, nonce=nonce_s)
    server.receive_data(client.data_to_send())
    client.receive_data(server.data_to_send())
    auth = client.data_to_send()
    expected = channel.proof(channel.auth_key(SECRET), "client", 1, nonce_c, nonce_s, 0, Hello.FLAG_SPEAKS_V2)
    assert auth[5:] == expected
    server.receive_data(auth)
    assert server.state is State.ESTABLISHED


# -- version 2's proofs ------------------------------------------------------------------------------------


def test_version_2_proof_binds_both_openings_as_they_crossed_the_wire() -> None:
    key = channel.auth_key(SECRET)
    a, b = encode_opening(1, 2, "a"), encode_opening(1, 2, "b")
    args = (key, "client", 2, bytes(32), bytes(32), 4, 4)
    assert channel.proof(*args, a, b) != channel.proof(*args, b, a)
    assert channel.proof(*args, a, b) != channel.proof(*args, a, encode_opening(1, 3, "b"))
    with pytest.raises(ValueError, match="binds both openings"):
        channel.proof(*args)
    with pytest.raises(ValueError, match="binds no opening"):
        channel.proof(key, "client", 1, bytes(32), bytes(32), 0, 0, a, b)


def test_version_2_rewritten_comment_is_refused_too() -> None:
    """The whole opening is bound, comment included: a peer's self-description cannot be changed either."""

    def recomment(opening: bytes) -> bytes:
        return encode_opening(1, 2, "ppft 9.9.9 (forged)")

    outcome = handshake(*pair((1, 2), (1, 2)), c2s_opening=recomment)
    assert outcome.established == {}
    assert isinstance(outcome.errors["server"], AuthenticationError)


def test_mismatch_is_still_named_when_a_rewrite_leaves_no_common_version() -> None:
    outcome = handshake(*pair((2, 2), (1, 2)), s2c_opening=forge_range(1, 1))
    assert isinstance(outcome.errors["client"], ProtocolMismatchError)
