"""Fuzzing with hypothesis: whatever bytes arrive, in whatever split and in whatever state, the decoder and
the connection give events or a `ProtocolError`, never another exception; buffered memory stays under the
cap; and no message event ever leaves a connection whose peer has not proven the secret.

Derandomized with bounded example counts, so the whole file runs in a few seconds and the same way on
every machine."""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Callable

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ppft_protocol import (
    AES_256_GCM,
    CHACHA20_POLY1305,
    PROTOCOL_VERSIONS,
    Auth,
    AuthFailed,
    AuthOk,
    Bye,
    Cancel,
    Closed,
    Connection,
    Established,
    Event,
    FunctionBody,
    Heartbeat,
    Hello,
    Job,
    JobBatch,
    Message,
    NodeInfo,
    ProtocolError,
    Result,
    ResultBatch,
    Role,
    State,
    StatsReply,
    StatsRequest,
    printable,
)
from ppft_protocol.framing import (
    MAX_OPENING,
    FrameDecoder,
    encode_frame_header,
    encode_opening,
    parse_opening,
)
from ppft_protocol.messages import MESSAGE_TYPES, encode_message

FUZZ = settings(
    derandomize=True,
    database=None,
    deadline=None,
    max_examples=250,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

SECRET = b"fuzz secret"
NONCE_C = bytes(range(32))
NONCE_S = bytes(range(32, 64))
DIGEST = hashlib.sha256(b"fuzz").digest()
KNOWN_TYPES = sorted(MESSAGE_TYPES)


# -- strategies -------------------------------------------------------------------------------------------


def frame(ftype: int, body: bytes) -> bytes:
    return encode_frame_header(ftype, len(body)) + body


frames_st = st.lists(
    st.tuples(st.sampled_from([*KNOWN_TYPES, 0x00, 0x99, 0xFF]), st.binary(max_size=300)), max_size=8
)


@st.composite
def split(draw: st.DrawFn, data: bytes) -> list[bytes]:
    """`data` cut at random points (possibly into single bytes)."""
    cuts = sorted(draw(st.lists(st.integers(0, len(data)), max_size=12)))
    pieces, last = [], 0
    for cut in [*cuts, len(data)]:
        pieces.append(data[last:cut])
        last = cut
    return [p for p in pieces if p]


@st.composite
def stream_and_splits(draw: st.DrawFn) -> list[bytes]:
    """A stream that is mostly well framed (so the decoder goes deep), with garbage mixed in at times."""
    data = b"".join(frame(t, b) for t, b in draw(frames_st))
    if draw(st.booleans()):
        data += draw(st.binary(max_size=40))
    if draw(st.booleans()) and data:
        pos = draw(st.integers(0, len(data) - 1))
        data = data[:pos] + bytes([data[pos] ^ draw(st.integers(1, 255))]) + data[pos + 1 :]
    return draw(split(data))


text_st = st.text(max_size=20)
blob_st = st.binary(max_size=64)
u32_st = st.integers(0, 2**32 - 1)
u64_st = st.integers(0, 2**64 - 1)
float_st = st.floats(allow_nan=False)

# An ok result carries no error fields on the wire, so only a failed one may have them.
result_st = st.one_of(
    st.tuples(u64_st, blob_st, text_st, float_st, float_st).map(lambda t: Result(t[0], True, *t[1:])),
    st.tuples(u64_st, text_st, float_st, float_st, text_st, text_st, text_st, blob_st).map(
        lambda t: Result(t[0], False, b"", *t[1:])
    ),
)

message_st: st.SearchStrategy[Message] = st.one_of(
    st.builds(Hello, st.binary(min_size=32, max_size=32), st.integers(0, 255)),
    st.builds(Auth, st.binary(min_size=32, max_size=32)),
    st.builds(AuthOk, st.binary(min_size=32, max_size=32)),
    st.builds(AuthFailed, text_st),
    st.builds(NodeInfo, text_st, u32_st, text_st, text_st),
    st.builds(FunctionBody, st.just(DIGEST), text_st, st.lists(text_st, max_size=3).map(tuple)),
    st.builds(
        JobBatch,
        st.lists(st.builds(Job, u64_st, st.just(DIGEST), blob_st, st.integers(0, 5)), max_size=4).map(tuple),
    ),
    st.builds(ResultBatch, st.lists(result_st, max_size=4).map(tuple)),
    st.builds(Cancel, st.lists(u64_st, max_size=5).map(tuple)),
    st.just(StatsRequest()),
    st.builds(StatsReply, u64_st, float_st, u32_st, u32_st),
    st.just(Heartbeat()),
    st.builds(Bye, text_st),
)


def encoded(message: Message) -> bytes:
    return frame(message.TYPE, b"".join(encode_message(message)))


# -- endpoints in every state -----------------------------------------------------------------------------


def _pair(allow_plain: bool = False, aes_gcm: bool = False) -> tuple[Connection, Connection]:
    client = Connection(Role.CLIENT, SECRET, nonce=NONCE_C, allow_plain=allow_plain, aes_gcm=aes_gcm)
    server = Connection(Role.SERVER, SECRET, nonce=NONCE_S, allow_plain=allow_plain, aes_gcm=aes_gcm)
    return client, server


def _opening_only(data: bytes) -> bytes:
    return data[: 8 + int.from_bytes(data[:8], "big")]


def server_awaiting_opening() -> Connection:
    return _pair()[1]


def client_awaiting_opening() -> Connection:
    return _pair()[0]


def server_awaiting_hello() -> Connection:
    client, server = _pair()
    server.receive_data(_opening_only(client.data_to_send()))
    return server


def client_awaiting_hello() -> Connection:
    client, server = _pair()
    client.receive_data(_opening_only(server.data_to_send()))
    return client


def server_awaiting_auth() -> Connection:
    client, server = _pair()
    data = client.data_to_send()
    server.receive_data(data)
    return server


def client_awaiting_auth_ok() -> Connection:
    client, server = _pair()
    client.receive_data(server.data_to_send())
    return client


def _established(role: Role, allow_plain: bool, aes_gcm: bool = False) -> Connection:
    client, server = _pair(allow_plain, aes_gcm)
    client.receive_data(server.data_to_send())
    server.receive_data(client.data_to_send())
    client.receive_data(server.data_to_send())
    assert client.state is server.state is State.ESTABLISHED
    return client if role is Role.CLIENT else server


ENDPOINTS: dict[str, Callable[[], Connection]] = {
    "server-await-opening": server_awaiting_opening,
    "client-await-opening": client_awaiting_opening,
    "server-await-hello": server_awaiting_hello,
    "client-await-hello": client_awaiting_hello,
    "server-await-auth": server_awaiting_auth,
    "client-await-auth-ok": client_awaiting_auth_ok,
    "server-established-sealed": lambda: _established(Role.SERVER, False),
    "client-established-sealed": lambda: _established(Role.CLIENT, False),
    "server-established-aes-gcm": lambda: _established(Role.SERVER, False, aes_gcm=True),
    "client-established-aes-gcm": lambda: _established(Role.CLIENT, False, aes_gcm=True),
    "server-established-plain": lambda: _established(Role.SERVER, True),
    "client-established-plain": lambda: _established(Role.CLIENT, True),
}
PRE_AUTH = [name for name in ENDPOINTS if "established" not in name]


def feed(conn: Connection, chunks: list[bytes]) -> tuple[list[Event], ProtocolError | None]:
    """Feed chunks until the connection closes or refuses; check the memory bound after every call."""
    events: list[Event] = []
    for chunk in chunks:
        if conn.state is State.CLOSED:
            break
        try:
            events += conn.receive_data(chunk)
        except ProtocolError as exc:
            assert conn.state is State.CLOSED
            return events, exc
        assert_bounded(conn)
    return events, None


def assert_bounded(conn: Connection) -> None:
    decoder = conn._decoder
    if conn.state is State.AWAIT_OPENING:
        assert decoder.buffered < 8 + MAX_OPENING
    elif conn.state is not State.CLOSED:
        assert decoder.buffered <= decoder.limit + 5
        assert decoder._large_size <= decoder.limit


def assert_no_message_before_established(events: list[Event]) -> None:
    for event in events:
        if isinstance(event, Established):
            return
        assert isinstance(event, Closed), f"{type(event).__name__} left an unauthenticated connection"


# -- the frame decoder ------------------------------------------------------------------------------------


@FUZZ
@given(chunks=stream_and_splits(), limit=st.sampled_from([0, 10, 300, 4096]))
def test_decoder_gives_frames_or_a_protocol_error_and_stays_under_its_cap(
    chunks: list[bytes], limit: int
) -> None:
    decoder = FrameDecoder(limit)
    got: list[bytes] = []
    consumed = 0
    try:
        for chunk in chunks:
            got += [frame(t, bytes(b)) for t, b in decoder.feed(chunk)]
            consumed += len(chunk)
            assert decoder.buffered <= limit + 5
    except ProtocolError:
        return
    data = b"".join(chunks)
    assert b"".join(got) == data[: consumed - decoder.buffered]


@FUZZ
@given(data=st.binary(max_size=2000), limit=st.sampled_from([64, 4096, 1 << 20]))
def test_decoder_survives_any_bytes_one_at_a_time_or_whole(data: bytes, limit: int) -> None:
    whole, single = FrameDecoder(limit), FrameDecoder(limit)
    try:
        expected = [(t, bytes(b)) for t, b in whole.feed(data)]
    except ProtocolError:
        expected = None
    got: list[tuple[int, bytes]] = []
    try:
        for i in range(len(data)):
            got += [(t, bytes(b)) for t, b in single.feed(data[i : i + 1])]
            assert single.buffered <= limit + 5
    except ProtocolError:
        assert expected is None
        return
    assert got == expected


@FUZZ
@given(data=st.binary(max_size=400))
def test_opening_parser_gives_an_opening_or_a_protocol_error(data: bytes) -> None:
    decoder = FrameDecoder(4096)
    try:
        text, _ = decoder.feed_opening(data)
    except ProtocolError:
        return
    assert decoder.buffered <= 8 + MAX_OPENING
    if text is not None:
        with contextlib.suppress(ProtocolError):  # the one kind of failure allowed
            opening = parse_opening(text)
            assert 0 < opening.min_version <= opening.max_version


# -- the connection, in every state -----------------------------------------------------------------------


@FUZZ
@given(state=st.sampled_from(sorted(ENDPOINTS)), chunks=st.lists(st.binary(max_size=200), max_size=6))
def test_any_bytes_in_any_state_give_events_or_a_protocol_error(state: str, chunks: list[bytes]) -> None:
    conn = ENDPOINTS[state]()
    events, _ = feed(conn, [c for c in chunks if c])
    if state in PRE_AUTH:
        assert_no_message_before_established(events)


@FUZZ
@given(state=st.sampled_from(sorted(ENDPOINTS)), chunks=stream_and_splits())
def test_framed_garbage_in_any_state_gives_events_or_a_protocol_error(
    state: str, chunks: list[bytes]
) -> None:
    conn = ENDPOINTS[state]()
    prefix = [encode_opening(1, 1, "fuzz")] if state.endswith("await-opening") else []
    events, _ = feed(conn, prefix + chunks)
    if state in PRE_AUTH:
        assert_no_message_before_established(events)


@FUZZ
@given(
    state=st.sampled_from(PRE_AUTH),
    messages=st.lists(message_st, min_size=1, max_size=6),
    data=st.data(),
)
def test_random_message_sequences_never_get_past_the_handshake(
    state: str, messages: list[Message], data: st.DataObject
) -> None:
    conn = ENDPOINTS[state]()
    stream = b"".join(encoded(m) for m in messages)
    if state.endswith("await-opening"):
        stream = encode_opening(1, 1, "fuzz") + stream
    conn.data_to_send()  # what it says unprompted: its opening and Hello
    events, _ = feed(conn, data.draw(split(stream)))
    assert events == []  # random proofs never verify, so not even Established
    answered = conn.data_to_send()
    if conn.role is Role.SERVER:
        assert answered in (b"", encoded(AuthFailed()))  # at most the one refusal
    else:
        assert answered[4:5] in (b"", bytes([Auth.TYPE]))  # at most its own proof


@FUZZ
@given(
    allow_plain=st.booleans(),
    aes_gcm=st.booleans(),
    messages=st.lists(message_st.filter(lambda m: m.TYPE >= 0x10), max_size=5),
    flips=st.lists(st.tuples(st.integers(0, 10**6), st.integers(1, 255)), max_size=3),
    cut=st.one_of(st.none(), st.integers(0, 10**6)),
    data=st.data(),
)
def test_mutated_valid_transcripts_give_events_or_a_protocol_error(
    allow_plain: bool,
    aes_gcm: bool,
    messages: list[Message],
    flips: list[tuple[int, int]],
    cut: int | None,
    data: st.DataObject,
) -> None:
    client, server = _pair(allow_plain, aes_gcm)
    client.receive_data(server.data_to_send())
    transcript = client.data_to_send()  # opening, Hello, Auth
    server.receive_data(transcript)
    client.receive_data(server.data_to_send())
    for message in messages:
        client.send(message)
        if isinstance(message, Bye):
            break
    stream = bytearray(transcript + client.data_to_send())
    for pos, mask in flips:
        stream[pos % len(stream)] ^= mask
    if cut is not None:
        del stream[cut % len(stream) :]
    # A fresh server with the same nonce sees exactly what `server` saw, until the mutations.
    fresh = Connection(Role.SERVER, SECRET, nonce=NONCE_S, allow_plain=allow_plain, aes_gcm=aes_gcm)
    events, error = feed(fresh, data.draw(split(bytes(stream))))
    assert_no_message_before_established(events)
    if not flips and cut is None:
        assert error is None
        cipher = "" if allow_plain else AES_256_GCM if aes_gcm else CHACHA20_POLY1305
        expected: list[Event] = [
            Established(PROTOCOL_VERSIONS[1], not allow_plain, fresh.peer_comment, cipher)
        ]
        for message in messages:
            expected.append(message)
            if isinstance(message, Bye):
                expected.append(Closed(printable(message.reason) or "peer said bye"))  # escaped
                break
        assert events == expected
