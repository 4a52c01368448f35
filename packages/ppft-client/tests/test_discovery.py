"""Client auto-discovery: ppft's ppservers entries read as ppft 1.7 reads them, and `Discovery` finding
ppservers on the loopback broadcast address 127.255.255.255 (by a raw announcing socket, and by a real
`Announcer` on its own loop thread)."""

from __future__ import annotations

import queue
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import pytest
from looplib import on_loop

from ppft_client.nodes import discovery
from ppft_client.nodes.discovery import Discovery, DiscoveryError, parse_ppservers
from ppft_protocol import PROTOCOL_VERSIONS
from ppft_protocol.discovery import Announce, Query, decode_datagram, encode_datagram
from ppft_worker.runtime.loop import Loop

BROADCAST = "127.255.255.255"
T = TypeVar("T")

# -- parse_ppservers --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("entry", "direct"),
    [
        ("node1:35000", ("node1", 35000)),
        ("node1", ("node1", 60000)),  # ppft 1.7: a random port; here the default port
        ("127.0.0.1:1", ("127.0.0.1", 1)),
        ("[::1]:35000", ("::1", 35000)),
        ("[::1]", ("::1", 60000)),
        ("fe80::1", ("fe80::1", 60000)),
        (" node1:35000 ", ("node1", 35000)),
    ],
)
def test_plain_entry_is_a_direct_server(entry: str, direct: tuple[str, int]) -> None:
    assert parse_ppservers((entry,), 60000) == ([direct], [])


@pytest.mark.parametrize(
    ("entry", "auto"),
    [
        ("*", (("0.0.0.0", 60000), ("255.255.255.255", 60000))),
        ("*:35000", (("0.0.0.0", 35000), ("255.255.255.255", 35000))),
        ("192.168.1.*", (("192.168.1.0", 60000), ("192.168.1.255", 60000))),
        ("192.168.1.*:35000", (("192.168.1.0", 35000), ("192.168.1.255", 35000))),
        ("10.*.*.*", (("10.0.0.0", 60000), ("10.255.255.255", 60000))),
        ("127.*.*.*:4", (("127.0.0.0", 4), ("127.255.255.255", 4))),
    ],
)
def test_wildcard_entry_is_a_discovery_pair(
    entry: str, auto: tuple[tuple[str, int], tuple[str, int]]
) -> None:
    assert parse_ppservers((entry,), 60000) == ([], [auto])


def test_entries_keep_their_order_and_kind() -> None:
    direct, auto = parse_ppservers(("b:2", "*", "a", "10.0.0.*:9"), 60000)
    assert direct == [("b", 2), ("a", 60000)]
    assert auto == [(("0.0.0.0", 60000), ("255.255.255.255", 60000)), (("10.0.0.0", 9), ("10.0.0.255", 9))]


def test_default_port_is_the_one_given() -> None:
    assert parse_ppservers(("host", "*"), 35000) == (
        [("host", 35000)],
        [(("0.0.0.0", 35000), ("255.255.255.255", 35000))],
    )


@pytest.mark.parametrize(
    ("entry", "reason"),
    [
        ("host:http", "port 'http' is not a number in 1-65535"),
        ("host:0", "port '0' is not a number in 1-65535"),
        ("host:70000", "port '70000' is not a number in 1-65535"),
        (":35000", "no host"),
        ("", "no host"),
        ("[::1", "missing ']'"),
        ("[::1]x", "expected ':port' after ']'"),
        ("node*", "a wildcard entry is an IPv4 pattern"),
        ("192.168.*", "a wildcard entry is an IPv4 pattern"),
        ("host:35000:1", "more than one ':' yet not an IPv6 address"),
        ("host:", "port '' is not a number in 1-65535"),
        ("host:+35", "port '+35' is not a number in 1-65535"),
        ("[node1]:35000", "'node1' in brackets is not an IPv6 address"),
        ("[::1]:", "port '' is not a number in 1-65535"),
        (
            "tcp://host:35000",
            "a tcp:// address is not a ppserver's (only ssh:// and dask:// entries take a scheme)",
        ),
    ],
)
def test_unreadable_entry_is_a_value_error_naming_it(entry: str, reason: str) -> None:
    with pytest.raises(ValueError) as info:
        parse_ppservers((entry,), 60000)
    assert repr(entry) in str(info.value) and reason in str(info.value)


def test_unreadable_entry_error_lists_the_accepted_forms() -> None:
    with pytest.raises(ValueError) as info:
        parse_ppservers(("node1:35000:1",), 60000)
    assert str(info.value) == (
        "ppservers entry 'node1:35000:1': more than one ':' yet not an IPv6 address (an IPv6 address with a "
        "port is '[IPv6]:port'); write 'host:port', 'host' (port 60000), '[IPv6]:port', a wildcard ('*', "
        "'*:port', '192.168.1.*'), 'ssh://[user@]host[:port]' or 'dask://HOST:PORT'"
    )


def test_non_string_entry_is_a_type_error() -> None:
    with pytest.raises(TypeError):
        parse_ppservers((("host", 1),), 60000)  # type: ignore[arg-type]


# -- Discovery on loopback --------------------------------------------------------------------------------


class LoopThread:
    """A `Loop` run by its own thread (`run_once(0.05)` until stopped); `call` runs code on that thread."""

    def __init__(self) -> None:
        self.loop = Loop()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            self.loop.run_once(0.05)

    def call(self, fn: Callable[[], T]) -> T:
        out: queue.Queue[tuple[bool, Any]] = queue.Queue()

        def run() -> None:
            try:
                out.put((True, fn()))
            except Exception as exc:  # noqa: BLE001 - handed to the test's thread, re-raised there
                out.put((False, exc))

        self.loop.call_soon_threadsafe(run)
        ok, value = out.get(timeout=10)
        if not ok:
            raise value
        return value  # type: ignore[no-any-return]

    def close(self) -> None:
        self._stop.set()
        self.loop.wake()
        self._thread.join(10)
        self.loop.close()


@pytest.fixture
def loop_threads() -> Iterator[Callable[[], LoopThread]]:
    made: list[LoopThread] = []

    def make() -> LoopThread:
        lt = LoopThread()
        made.append(lt)
        return lt

    try:
        yield make
    finally:
        for lt in made:
            lt.close()


@pytest.fixture
def udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def fake_server(udp_port: int) -> Iterator[socket.socket]:
    """A server-like UDP socket on the discovery port, bound the way an announcer binds."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
    sock.bind(("", udp_port))
    try:
        yield sock
    finally:
        sock.close()


class Found:
    """Collects on_found calls (made on the loop's thread) for the test's thread to wait on."""

    def __init__(self) -> None:
        self.calls: queue.Queue[tuple[str, int]] = queue.Queue()
        self.candidates: dict[tuple[str, int], Any] = {}

    def __call__(self, host: str, port: int, candidate: Any) -> None:
        self.candidates[(host, port)] = candidate
        self.calls.put((host, port))

    def next(self, timeout: float = 5.0) -> tuple[str, int]:
        return self.calls.get(timeout=timeout)

    def none_within(self, timeout: float) -> bool:
        try:
            self.calls.get(timeout=timeout)
        except queue.Empty:
            return True
        return False


@pytest.fixture
def start_discovery(
    loop_threads: Callable[[], LoopThread], udp_port: int
) -> Iterator[Callable[..., tuple[Discovery, Found]]]:
    made: list[tuple[LoopThread, Discovery]] = []

    def start(**kwargs: Any) -> tuple[Discovery, Found]:
        lt = loop_threads()
        found = Found()
        options: dict[str, Any] = {"interface": "0.0.0.0", "broadcast": BROADCAST, "port": udp_port}
        options.update(kwargs)
        disc = Discovery(lt.loop, on_found=found, **options)
        lt.call(disc.start)
        made.append((lt, disc))
        return disc, found

    yield start
    for lt, disc in made:
        lt.call(disc.close)


def announce_bytes(tcp_port: int, versions: tuple[int, int] = PROTOCOL_VERSIONS, name: str = "n") -> bytes:
    return encode_datagram(Announce(tcp_port, *versions, name))


def test_queries_the_broadcast_address_at_start(
    start_discovery: Callable[..., tuple[Discovery, Found]], fake_server: socket.socket
) -> None:
    fake_server.settimeout(5)
    start_discovery()
    data, sender = fake_server.recvfrom(4096)
    assert decode_datagram(data) == Query()
    assert sender[0] == "127.0.0.1"


def test_announce_calls_on_found_with_sender_and_tcp_port(
    start_discovery: Callable[..., tuple[Discovery, Found]], fake_server: socket.socket, udp_port: int
) -> None:
    _, found = start_discovery()
    fake_server.sendto(announce_bytes(43211), (BROADCAST, udp_port))
    assert found.next() == ("127.0.0.1", 43211)


def test_each_server_is_reported_once(
    start_discovery: Callable[..., tuple[Discovery, Found]], fake_server: socket.socket, udp_port: int
) -> None:
    _, found = start_discovery()
    for _ in range(3):
        fake_server.sendto(announce_bytes(43212), (BROADCAST, udp_port))
    fake_server.sendto(announce_bytes(43213), (BROADCAST, udp_port))
    assert {found.next(), found.next()} == {("127.0.0.1", 43212), ("127.0.0.1", 43213)}
    assert found.none_within(0.3)


def test_announced_protocol_versions_are_not_believed_the_address_is_still_tried(
    start_discovery: Callable[..., tuple[Discovery, Found]],
    fake_server: socket.socket,
    udp_port: int,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Anyone can forge an announcement: versions 9-9 for a real ppserver's port must not shut it out. The
    # address is suggested all the same; the TCP handshake decides.
    _, found = start_discovery()
    newer = (PROTOCOL_VERSIONS[1] + 7, PROTOCOL_VERSIONS[1] + 7)
    with caplog.at_level("INFO", logger="ppft.discovery"):
        fake_server.sendto(announce_bytes(43214, newer), (BROADCAST, udp_port))
        assert found.next() == ("127.0.0.1", 43214)
    assert any("trying it anyway" in r.getMessage() for r in caplog.records)


def test_a_forgotten_address_is_suggested_again_only_after_its_cool_down(
    start_discovery: Callable[..., tuple[Discovery, Found]],
    fake_server: socket.socket,
    udp_port: int,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(discovery, "COOL_DOWN", 0.5)
    disc, found = start_discovery()
    fake_server.sendto(announce_bytes(43230), (BROADCAST, udp_port))
    assert found.next() == ("127.0.0.1", 43230)
    candidate = found.candidates[("127.0.0.1", 43230)]
    on_loop(disc.loop, lambda: candidate.forget("connection refused"))
    assert ("127.0.0.1", 43230) not in disc.found
    fake_server.sendto(announce_bytes(43230), (BROADCAST, udp_port))
    assert found.none_within(0.2)  # still cooling down
    deadline = time.monotonic() + 5
    while True:  # announced again after the cool-down: tried again, and remembering why it failed
        fake_server.sendto(announce_bytes(43230), (BROADCAST, udp_port))
        try:
            assert found.calls.get(timeout=0.1) == ("127.0.0.1", 43230)
            break
        except queue.Empty:
            assert time.monotonic() < deadline, "a forgotten address was never tried again"
    assert found.candidates[("127.0.0.1", 43230)].last_error == "connection refused"


def test_a_flood_of_announcements_is_tried_a_bounded_number_at_a_time(
    start_discovery: Callable[..., tuple[Discovery, Found]], fake_server: socket.socket, udp_port: int
) -> None:
    disc, found = start_discovery()
    for port in range(44000, 44000 + 3 * discovery.MAX_UNANSWERED):
        fake_server.sendto(announce_bytes(port), (BROADCAST, udp_port))
    got = [found.next() for _ in range(discovery.MAX_UNANSWERED)]
    assert found.none_within(0.3)  # the rest wait: at most MAX_UNANSWERED unanswered at once
    assert len(set(got)) == discovery.MAX_UNANSWERED
    # one answers (a real ppserver), another is forgotten: room for two more
    first, second = (found.candidates[address] for address in got[:2])
    on_loop(disc.loop, first.answered)
    on_loop(disc.loop, lambda: second.forget("connection refused"))
    fake_server.sendto(announce_bytes(44100), (BROADCAST, udp_port))
    fake_server.sendto(announce_bytes(44101), (BROADCAST, udp_port))
    fake_server.sendto(announce_bytes(44102), (BROADCAST, udp_port))
    assert {found.next(), found.next()} == {("127.0.0.1", 44100), ("127.0.0.1", 44101)}
    assert found.none_within(0.3)


def test_garbage_is_ignored(
    start_discovery: Callable[..., tuple[Discovery, Found]], fake_server: socket.socket, udp_port: int
) -> None:
    _, found = start_discovery()
    for junk in (b"S", b"C", b"PPFTDSC1A", b"\0" * 50):
        fake_server.sendto(junk, (BROADCAST, udp_port))
    fake_server.sendto(announce_bytes(43216), (BROADCAST, udp_port))
    assert found.next() == ("127.0.0.1", 43216)


def test_queries_again_every_interval(
    start_discovery: Callable[..., tuple[Discovery, Found]],
    fake_server: socket.socket,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(discovery, "QUERY_INTERVAL", 0.1)
    fake_server.settimeout(2)
    start_discovery()
    started = time.monotonic()
    queries = 0
    while queries < 4:
        data, _ = fake_server.recvfrom(4096)
        queries += decode_datagram(data) == Query()
    assert time.monotonic() - started < 2


def test_wildcard_network_binds_all_interfaces_and_filters_senders(
    start_discovery: Callable[..., tuple[Discovery, Found]], fake_server: socket.socket, udp_port: int
) -> None:
    # 127.0.0.* -> interface 127.0.0.0: bound as such, Linux would deliver no broadcast at all.
    inside, _ = start_discovery(interface="127.0.0.0", broadcast="127.0.0.255")
    assert str(inside.network) == "127.0.0.0/24"
    _, outside_found = start_discovery(interface="10.0.0.0", broadcast="10.0.0.255")
    _, found = start_discovery(interface="127.0.0.0", broadcast="127.255.255.255")
    fake_server.sendto(announce_bytes(43217), (BROADCAST, udp_port))
    assert found.next() == ("127.0.0.1", 43217)
    assert outside_found.none_within(0.3)  # 127.0.0.1 is not in 10.0.0.0/24


def test_port_held_without_sharing_is_a_discovery_error(
    loop_threads: Callable[[], LoopThread], udp_port: int
) -> None:
    lt = loop_threads()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as hog:
        hog.bind(("", udp_port))
        disc = Discovery(lt.loop, interface="0.0.0.0", broadcast=BROADCAST, port=udp_port, on_found=Found())
        with pytest.raises(DiscoveryError) as info:
            lt.call(disc.start)
    assert str(udp_port) in str(info.value) and "host:port" in str(info.value)


def test_announcer_and_discovery_on_two_loop_threads_find_each_other(
    loop_threads: Callable[[], LoopThread],
    start_discovery: Callable[..., tuple[Discovery, Found]],
    udp_port: int,
) -> None:
    announce_mod = pytest.importorskip("ppft_server.announce")
    server_thread = loop_threads()
    announcer = announce_mod.Announcer(
        server_thread.loop,
        interface="0.0.0.0",
        broadcast=BROADCAST,
        port=udp_port,
        tcp_port=43218,
        name="srv",
    )
    try:
        server_thread.call(announcer.start)
        started = time.monotonic()
        _, found = start_discovery()
        assert found.next(timeout=5) == ("127.0.0.1", 43218)
        assert time.monotonic() - started < 1.0  # the query is answered at once, not at the next tick
    finally:
        server_thread.call(announcer.close)


def test_discovery_started_first_finds_an_announcer_started_later(
    loop_threads: Callable[[], LoopThread],
    start_discovery: Callable[..., tuple[Discovery, Found]],
    udp_port: int,
) -> None:
    announce_mod = pytest.importorskip("ppft_server.announce")
    _, found = start_discovery()
    server_thread = loop_threads()
    announcer = announce_mod.Announcer(
        server_thread.loop,
        interface="127.0.0.1",
        broadcast=BROADCAST,
        port=udp_port,
        tcp_port=43219,
        name="srv",
    )
    try:
        server_thread.call(announcer.start)  # bound to 127.0.0.1: hears no query, but announces at start
        assert found.next(timeout=5) == ("127.0.0.1", 43219)
    finally:
        server_thread.call(announcer.close)
