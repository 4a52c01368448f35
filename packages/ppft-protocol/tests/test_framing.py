"""Framing: the opening line, the incremental frame decoder in every split, size caps checked on the
header, the one-copy large-frame path, and the legacy ppft 1.x interplay."""

from __future__ import annotations

import array
import socket
import struct
import tracemalloc
from collections.abc import Iterator

import pytest

from ppft_protocol import (
    PROTOCOL_VERSIONS,
    Connection,
    DecodeError,
    FrameTooLarge,
    LegacyPeerError,
    RemoteProtocolError,
    Role,
    State,
)
from ppft_protocol.framing import (
    MAGIC,
    MAX_OPENING,
    FrameDecoder,
    encode_frame_header,
    encode_opening,
    parse_opening,
)


def frame(ftype: int, body: bytes) -> bytes:
    return encode_frame_header(ftype, len(body)) + body


def legacy_message(data: bytes) -> bytes:
    """One message as ppft 1.x's transport sends it: an 8-byte big-endian length, then the bytes."""
    return struct.pack("!Q", len(data)) + data


def chunks(data: bytes, size: int) -> Iterator[memoryview]:
    view = memoryview(data)
    for off in range(0, len(data), size):
        yield view[off : off + size]


def decode_all(decoder: FrameDecoder, data: bytes, size: int) -> list[tuple[int, bytes]]:
    out: list[tuple[int, bytes]] = []
    for piece in chunks(data, size):
        out += [(t, bytes(b)) for t, b in decoder.feed(piece)]
    return out


SMALL_FRAMES = [
    (0x21, b""),
    (0x30, b"a"),
    (0x60, b""),
    (0x10, bytes(range(200))),
    (0x70, b"bye bye"),
    (0x40, b"\x00" * 4),
]
SMALL_STREAM = b"".join(frame(t, b) for t, b in SMALL_FRAMES)

LARGE_FRAMES = [
    (0x21, b"x" * 10),
    (0x30, bytes(range(256)) * 256),  # exactly 64 KiB: the first size assembled in a buffer of its own
    (0x30, b"y" * (64 * 1024 - 1)),  # one byte under: the small path
    (0x21, b""),
    (0x20, bytes(range(251)) * 400 + b"end"),
]
LARGE_STREAM = b"".join(frame(t, b) for t, b in LARGE_FRAMES)


# -- the opening -------------------------------------------------------------------------------------------


def test_opening_is_an_8_byte_length_then_the_magic_and_version_range() -> None:
    text = b"ppft-protocol/1-3 (hi)"
    assert encode_opening(1, 3, "hi") == struct.pack(">Q", len(text)) + text


def test_opening_round_trips_through_parse_opening() -> None:
    opening = parse_opening(encode_opening(2, 7, "ppft 2.0.0")[8:])
    assert (opening.min_version, opening.max_version, opening.comment) == (2, 7, "ppft 2.0.0")


def test_opening_without_a_comment_is_accepted() -> None:
    opening = parse_opening(MAGIC + b"1-1")
    assert (opening.min_version, opening.max_version, opening.comment) == (1, 1, "")


def test_opening_with_an_empty_version_range_is_a_decode_error() -> None:
    with pytest.raises(DecodeError, match="empty protocol version range 3-2"):
        parse_opening(MAGIC + b"3-2 (backwards)")


def test_opening_of_another_protocol_is_a_decode_error() -> None:
    with pytest.raises(DecodeError, match="did not open with the ppft protocol"):
        parse_opening(b"SSH-2.0-OpenSSH_9.6")


@pytest.mark.parametrize("low, high", [(0, 1), (2, 1), (1, 100000)])
def test_opening_refuses_a_bad_local_version_range(low: int, high: int) -> None:
    with pytest.raises(ValueError, match="bad version range"):
        encode_opening(low, high, "")


def test_opening_refuses_a_comment_that_makes_it_too_long() -> None:
    with pytest.raises(ValueError, match=f"longer than {MAX_OPENING}"):
        encode_opening(1, 1, "x" * MAX_OPENING)


@pytest.mark.parametrize("version", [b"1.7.8", b"1.7.6.9", b"1.6.4.4", b"1.7.6.9.dev0"])
def test_legacy_1x_version_string_is_recognised(version: bytes) -> None:
    with pytest.raises(LegacyPeerError, match="legacy ppft/pp") as info:
        parse_opening(version)
    assert version.decode() in str(info.value)
    assert "pip install -U ppft" in str(info.value)


def test_client_meeting_a_legacy_1x_server_raises_legacy_peer_error() -> None:
    client = Connection(Role.CLIENT, b"s")
    legacy_server_bytes = legacy_message(b"1.7.8") + legacy_message(b"rAnDoMsTrInG1234")
    with pytest.raises(LegacyPeerError, match=r"legacy ppft/pp 1\.7\.8 process"):
        client.receive_data(legacy_server_bytes)
    assert client.state is State.CLOSED


def test_legacy_1x_server_is_recognised_when_its_bytes_arrive_one_at_a_time() -> None:
    client = Connection(Role.CLIENT, b"s")
    data = legacy_message(b"1.7.8")
    for i in range(len(data) - 1):
        assert client.receive_data(data[i : i + 1]) == []
    with pytest.raises(LegacyPeerError):
        client.receive_data(data[-1:])


def test_legacy_1x_client_reads_the_server_opening_as_a_foreign_version_string() -> None:
    """A 1.x client does `receive()` (8-byte length, then the bytes) and compares with its own version:
    it must read a short, readable string naming the new protocol, not garbage, and then hang up."""
    server = Connection(Role.SERVER, b"s")
    data = server.data_to_send()
    (length,) = struct.unpack("!Q", data[:8])
    remote_version = data[8 : 8 + length].decode("ascii")
    assert remote_version.startswith("ppft-protocol/{}-{} (".format(*PROTOCOL_VERSIONS))
    assert "not compatible with ppft 1.x" in remote_version
    assert remote_version != "1.7.8"


def _legacy_receive(sock: socket.socket) -> bytes:
    """ppft 1.x's SocketTransport.receive: an 8-byte big-endian length, then exactly that many bytes."""

    def exactly(n: int) -> bytes:
        data = b""
        while len(data) < n:
            chunk = sock.recv(n - len(data))
            if not chunk:
                raise ConnectionError("socket closed")
            data += chunk
        return data

    (length,) = struct.unpack("!Q", exactly(8))
    return exactly(length)


def test_legacy_1x_client_over_a_socket_reads_a_version_mismatch_not_garbage() -> None:
    server = Connection(Role.SERVER, b"s")
    ours, legacy = socket.socketpair()
    with ours, legacy:
        legacy.settimeout(5)
        ours.sendall(server.data_to_send())
        remote_version = _legacy_receive(legacy).decode("ascii")
        legacy.close()  # what the 1.x client does after "PP version mismatch"
        assert remote_version.startswith("ppft-protocol/{}-{}".format(*PROTOCOL_VERSIONS))
        ours.settimeout(5)
        try:
            data = ours.recv(65536)
        except ConnectionResetError:  # it closed with our Hello unread: for the I/O layer, end of stream
            data = b""
        with pytest.raises(RemoteProtocolError, match=r"1\.x client"):
            server.receive_data(data)


def test_client_over_a_socket_names_a_legacy_1x_server() -> None:
    client = Connection(Role.CLIENT, b"s")
    ours, legacy = socket.socketpair()
    with ours, legacy:
        ours.settimeout(5)
        legacy.sendall(legacy_message(b"1.7.8") + legacy_message(b"abcdefghijklmnop"))
        ours.sendall(client.data_to_send())
        assert _legacy_receive(legacy).startswith(b"ppft-protocol/")  # read by 1.x as a wrong answer
        with pytest.raises(LegacyPeerError, match=r"1\.7\.8"):
            while True:
                client.receive_data(ours.recv(3))


def test_server_hung_up_on_before_the_opening_names_ppft_1x() -> None:
    server = Connection(Role.SERVER, b"s")
    with pytest.raises(RemoteProtocolError, match=r"1\.x client"):
        server.receive_data(b"")


def test_opening_length_of_zero_is_refused_at_once() -> None:
    with pytest.raises(DecodeError, match="not the length of an opening"):
        FrameDecoder(4096).feed_opening(bytes(8))


def test_http_request_instead_of_an_opening_is_refused_after_8_bytes() -> None:
    decoder = FrameDecoder(4096)
    with pytest.raises(DecodeError, match="not the length of an opening"):
        decoder.feed_opening(b"GET / HTTP/1.1\r\n" + b"x" * 10000)


def test_opening_split_anywhere_is_parsed_and_the_rest_returned_uncopied() -> None:
    data = encode_opening(1, 2, "c") + b"REST"
    for cut in range(len(data) + 1):
        decoder = FrameDecoder(4096)
        first, rest1 = decoder.feed_opening(data[:cut])
        if cut < len(data) - 4:
            assert first is None
            second, rest2 = decoder.feed_opening(data[cut:])
            assert second == MAGIC + b"1-2 (c)"
            assert bytes(rest2) == b"REST"
        else:
            assert first == MAGIC + b"1-2 (c)"
            assert bytes(rest1) == b"REST"[: cut - (len(data) - 4)]


def test_opening_buffers_only_its_own_bytes() -> None:
    decoder = FrameDecoder(4096)
    data = encode_opening(1, 1, "c")
    text, rest = decoder.feed_opening(data + b"z" * 100000)
    assert text is not None
    assert len(rest) == 100000
    assert rest.obj is not None
    assert decoder.buffered == 0


# -- frames in every split ---------------------------------------------------------------------------------


@pytest.mark.parametrize("size", range(1, len(SMALL_STREAM) + 1))
def test_small_frames_decode_the_same_in_every_split_size(size: int) -> None:
    assert decode_all(FrameDecoder(4096), SMALL_STREAM, size) == SMALL_FRAMES


def test_small_frames_decode_the_same_cut_in_two_anywhere() -> None:
    for cut in range(len(SMALL_STREAM) + 1):
        decoder = FrameDecoder(4096)
        got = [(t, bytes(b)) for t, b in decoder.feed(SMALL_STREAM[:cut])]
        got += [(t, bytes(b)) for t, b in decoder.feed(SMALL_STREAM[cut:])]
        assert got == SMALL_FRAMES
        assert not decoder.in_frame


@pytest.mark.parametrize("size", [1, 2, 3, 5, 7, 4096, 65535, 65536, 65541, 100000, len(LARGE_STREAM)])
def test_large_frames_decode_the_same_in_every_split_size(size: int) -> None:
    assert decode_all(FrameDecoder(1 << 20), LARGE_STREAM, size) == LARGE_FRAMES


def test_bytes_and_memoryview_and_bytearray_input_decode_alike() -> None:
    for data in (SMALL_STREAM, bytearray(SMALL_STREAM), memoryview(SMALL_STREAM)):
        assert [(t, bytes(b)) for t, b in FrameDecoder(4096).feed(data)] == SMALL_FRAMES


def test_a_memoryview_of_wider_items_is_read_as_its_bytes() -> None:
    data = SMALL_STREAM + bytes(-len(SMALL_STREAM) % 4)
    words = array.array("I", data)
    got = [(t, bytes(b)) for t, b in FrameDecoder(4096).feed(memoryview(words))]
    assert got[: len(SMALL_FRAMES)] == SMALL_FRAMES


def test_frames_in_one_chunk_are_views_of_that_chunk() -> None:
    frames = FrameDecoder(4096).feed(SMALL_STREAM)
    assert all(body.obj is SMALL_STREAM for _, body in frames)


def test_decoder_holds_only_the_incomplete_frame() -> None:
    decoder = FrameDecoder(4096)
    data = frame(0x21, b"a" * 100) + frame(0x21, b"b" * 100)[:60]
    assert len(decoder.feed(data)) == 1
    assert decoder.buffered == 60
    assert decoder.in_frame


# -- size caps --------------------------------------------------------------------------------------------


def test_frame_at_the_cap_is_accepted() -> None:
    assert [len(b) for _, b in FrameDecoder(4096).feed(frame(0x21, bytes(4096)))] == [4096]


def test_oversized_frame_is_refused_on_its_header_alone() -> None:
    decoder = FrameDecoder(4096)
    with pytest.raises(FrameTooLarge, match="4097 bytes, over the 4096-byte cap before authentication"):
        decoder.feed(encode_frame_header(0x21, 4097))
    assert decoder.buffered == 0


def test_oversized_frame_is_refused_when_its_header_arrives_byte_by_byte() -> None:
    decoder = FrameDecoder(4096)
    header = encode_frame_header(0x21, 0xFFFFFFFF)
    for i in range(4):
        decoder.feed(header[i : i + 1])
    assert decoder.buffered == 4
    with pytest.raises(FrameTooLarge) as info:
        decoder.feed(header[4:] + b"body")
    assert (info.value.size, info.value.limit) == (0xFFFFFFFF, 4096)


def test_oversized_frame_after_a_good_one_is_refused_before_its_body() -> None:
    decoder = FrameDecoder(4096)
    with pytest.raises(FrameTooLarge):
        decoder.feed(frame(0x21, b"ok") + encode_frame_header(0x21, 1 << 30) + b"x" * 1000)


def test_cap_after_authentication_names_the_setting_to_raise() -> None:
    decoder = FrameDecoder(1000)
    decoder.authenticated = True
    with pytest.raises(FrameTooLarge, match="after authentication; raise max_frame_size"):
        decoder.feed(encode_frame_header(0x21, 1001))


def test_announcing_a_huge_frame_allocates_nothing_until_its_bytes_arrive() -> None:
    decoder = FrameDecoder(1 << 30)
    tracemalloc.start()
    try:
        decoder.feed(encode_frame_header(0x30, 1 << 30) + b"abc")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 1 << 20
    assert decoder.buffered == 3
    assert decoder.in_frame


# -- the large-frame path: one copy, and buffer reuse ----------------------------------------------------


def test_large_frame_arriving_whole_is_not_copied() -> None:
    data = frame(0x30, b"z" * 300000)
    ((_, body),) = FrameDecoder(1 << 20).feed(data)
    assert body.obj is data


def test_large_frame_arriving_in_pieces_is_assembled_in_one_buffer_of_its_size() -> None:
    payload = bytes(range(256)) * 1000
    decoder = FrameDecoder(1 << 20)
    got = []
    for piece in chunks(frame(0x30, payload), 4096):
        got += decoder.feed(piece)
    ((_, body),) = got
    assert isinstance(body.obj, bytearray)
    assert len(body.obj) == len(payload)
    assert body == payload


def test_large_frame_fed_from_a_reused_writable_buffer_is_copied_as_it_arrives() -> None:
    payload = bytes(range(256)) * 1000
    data = frame(0x30, payload)
    decoder = FrameDecoder(1 << 20)
    scratch = bytearray(4096)
    got = []
    for off in range(0, len(data), 4096):
        piece = data[off : off + 4096]
        scratch[: len(piece)] = piece  # like recv_into() into the same buffer every time
        got += decoder.feed(memoryview(scratch)[: len(piece)])
        scratch[:] = bytes(4096)
    ((_, body),) = got
    assert body == payload


def test_large_buffer_is_reused_once_the_previous_body_is_released() -> None:
    decoder = FrameDecoder(1 << 20)
    data = frame(0x30, b"A" * 100000)
    ((_, first),) = decoder.feed(data[:10]) + decoder.feed(data[10:])
    first_buffer = first.obj
    first.release()
    again = frame(0x30, b"B" * 100000)
    ((_, second),) = decoder.feed(again[:10]) + decoder.feed(again[10:])
    assert second.obj is first_buffer
    assert second == b"B" * 100000


def test_large_buffer_still_viewed_by_the_caller_is_never_overwritten() -> None:
    decoder = FrameDecoder(1 << 20)
    data = frame(0x30, b"A" * 100000)
    ((_, first),) = decoder.feed(data[:10]) + decoder.feed(data[10:])
    kept = first[5:50]  # a slice of a body still pins its buffer
    del first
    again = frame(0x30, b"B" * 100000)
    ((_, second),) = decoder.feed(again[:10]) + decoder.feed(again[10:])
    assert second.obj is not kept.obj
    assert kept == b"A" * 45
    assert second == b"B" * 100000


def test_smaller_large_frame_reuses_a_bigger_buffer_as_a_view_of_its_size() -> None:
    decoder = FrameDecoder(1 << 20)
    big = frame(0x30, b"A" * 150000)
    small = frame(0x30, b"B" * 100000)
    decoder.feed(big[:10])
    decoder.feed(big[10:])
    ((_, body),) = decoder.feed(small[:10]) + decoder.feed(small[10:])
    assert len(body) == 100000
    assert body == b"B" * 100000


# -- single mode (the handshake) ---------------------------------------------------------------------------


def test_single_mode_hands_out_one_frame_and_holds_the_rest() -> None:
    decoder = FrameDecoder(4096)
    decoder.single = True
    assert [(t, bytes(b)) for t, b in decoder.feed(SMALL_STREAM)] == SMALL_FRAMES[:1]
    assert decoder.buffered == len(SMALL_STREAM) - len(frame(*SMALL_FRAMES[0]))
    got = []
    while True:
        more = decoder.pending()
        if not more:
            break
        got += [(t, bytes(b)) for t, b in more]
    assert got == SMALL_FRAMES[1:]
    assert decoder.buffered == 0


def test_single_mode_checks_held_frames_against_the_cap_in_force_when_they_are_parsed() -> None:
    decoder = FrameDecoder(4096)
    decoder.single = True
    data = frame(0x03, b"p" * 32) + frame(0x21, b"j" * 100000)
    assert len(decoder.feed(data)) == 1
    decoder.set_limit(1 << 20)
    decoder.single = False
    ((ftype, body),) = decoder.pending()
    assert (ftype, len(body)) == (0x21, 100000)


def test_single_mode_refuses_a_held_oversized_frame_under_the_small_cap() -> None:
    decoder = FrameDecoder(4096)
    decoder.single = True
    decoder.feed(frame(0x01, b"n" * 33) + frame(0x21, b"j" * 5000))
    with pytest.raises(FrameTooLarge):
        decoder.pending()


def test_single_mode_keeps_order_when_fed_again_without_pending() -> None:
    decoder = FrameDecoder(4096)
    decoder.single = True
    got = [(t, bytes(b)) for t, b in decoder.feed(SMALL_STREAM[:50])]
    for piece in chunks(SMALL_STREAM[50:], 7):
        got += [(t, bytes(b)) for t, b in decoder.feed(piece)]
    while more := decoder.pending():
        got += [(t, bytes(b)) for t, b in more]
    assert got == SMALL_FRAMES
