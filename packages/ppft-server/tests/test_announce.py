"""The announcer of `ppserver -a`: on the loopback broadcast address 127.255.255.255, it announces its TCP
port at start, again every interval, and at once when a client queries; it ignores anything else."""

from __future__ import annotations

import queue
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import pytest

from ppft_protocol import PROTOCOL_VERSIONS, DecodeError
from ppft_protocol.discovery import Announce, Query, decode_datagram, encode_datagram
from ppft_server import announce
from ppft_server.announce import AnnounceError, Announcer
from ppft_worker.runtime.loop import Loop

BROADCAST = "127.255.255.255"
T = TypeVar("T")


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
def loop_thread() -> Iterator[LoopThread]:
    lt = LoopThread()
    try:
        yield lt
    finally:
        lt.close()


@pytest.fixture
def udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def listener(udp_port: int) -> Iterator[socket.socket]:
    """A client-like UDP socket on the discovery port (shared, as a client's is)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
    sock.bind(("", udp_port))
    sock.settimeout(5)
    try:
        yield sock
    finally:
        sock.close()


@pytest.fixture
def start_announcer(loop_thread: LoopThread, udp_port: int) -> Iterator[Callable[..., Announcer]]:
    made: list[Announcer] = []

    def start(**kwargs: Any) -> Announcer:
        options: dict[str, Any] = {
            "interface": "0.0.0.0",
            "broadcast": BROADCAST,
            "port": udp_port,
            "tcp_port": 43210,
            "name": "node-a",
        }
        options.update(kwargs)
        announcer = Announcer(loop_thread.loop, **options)
        made.append(announcer)
        loop_thread.call(announcer.start)
        return announcer

    yield start
    for announcer in made:
        loop_thread.call(announcer.close)


def next_announce(sock: socket.socket, timeout: float = 5.0) -> tuple[Announce, str]:
    """The next Announce the socket receives (skipping queries and junk), and its sender's address."""
    deadline = time.monotonic() + timeout
    while True:
        sock.settimeout(max(0.01, deadline - time.monotonic()))
        data, sender = sock.recvfrom(4096)
        try:
            datagram = decode_datagram(data)
        except DecodeError:
            continue  # the test's own junk, heard back
        if isinstance(datagram, Announce):
            return datagram, sender[0]


def test_announces_its_tcp_port_name_and_versions_at_start(
    start_announcer: Callable[..., Announcer], listener: socket.socket
) -> None:
    start_announcer(tcp_port=43210, name="node-a")
    announce_, sender = next_announce(listener)
    assert announce_ == Announce(43210, *PROTOCOL_VERSIONS, "node-a")
    assert sender == "127.0.0.1"


def test_answers_a_query_at_once(
    start_announcer: Callable[..., Announcer], listener: socket.socket, udp_port: int
) -> None:
    start_announcer()
    next_announce(listener)  # the one sent at start; the next unasked one is 2 s away
    asked = time.monotonic()
    listener.sendto(encode_datagram(Query()), (BROADCAST, udp_port))
    next_announce(listener, timeout=1.5)
    assert time.monotonic() - asked < 1.5


def test_announces_again_every_interval(
    start_announcer: Callable[..., Announcer], listener: socket.socket, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(announce, "ANNOUNCE_INTERVAL", 0.1)
    start_announcer()
    started = time.monotonic()
    for _ in range(4):
        next_announce(listener, timeout=2)
    assert time.monotonic() - started < 2


def test_ignores_garbage_and_legacy_datagrams(
    start_announcer: Callable[..., Announcer], listener: socket.socket, udp_port: int
) -> None:
    announcer = start_announcer()
    next_announce(listener)
    for junk in (b"C", b"S", b"", b"PPFTDSC1", b"\xff" * 300):
        listener.sendto(junk, (BROADCAST, udp_port))
    listener.sendto(encode_datagram(Query()), (BROADCAST, udp_port))
    next_announce(listener, timeout=1.5)  # still alive and answering
    # The announcer counts a datagram after sending it, on its own thread: give the count a moment.
    deadline = time.monotonic() + 2.0
    while announcer.announcements < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert announcer.announcements >= 2


def test_burst_of_queries_gets_few_answers(
    start_announcer: Callable[..., Announcer], listener: socket.socket, udp_port: int
) -> None:
    announcer = start_announcer()
    next_announce(listener)
    before = announcer.announcements
    for _ in range(50):
        listener.sendto(encode_datagram(Query()), (BROADCAST, udp_port))
    next_announce(listener, timeout=1.5)
    assert announcer.announcements - before < 50


def test_close_stops_announcing(
    start_announcer: Callable[..., Announcer],
    loop_thread: LoopThread,
    listener: socket.socket,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(announce, "ANNOUNCE_INTERVAL", 0.05)
    announcer = start_announcer()
    next_announce(listener)
    loop_thread.call(announcer.close)
    while True:  # drain what was sent before the close
        listener.settimeout(0.3)
        try:
            listener.recvfrom(4096)
        except TimeoutError:
            break
    count = announcer.announcements
    with pytest.raises(TimeoutError):
        next_announce(listener, timeout=0.5)
    assert announcer.announcements == count


def test_port_held_without_sharing_is_an_announce_error(loop_thread: LoopThread, udp_port: int) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as hog:
        hog.bind(("", udp_port))  # no SO_REUSEADDR: nobody may share the port
        announcer = Announcer(
            loop_thread.loop, interface="0.0.0.0", broadcast=BROADCAST, port=udp_port, tcp_port=1, name="x"
        )
        with pytest.raises(AnnounceError) as info:
            loop_thread.call(announcer.start)
    assert f"0.0.0.0:{udp_port}" in str(info.value) and "without -a" in str(info.value)


def test_overlong_name_is_cut_to_fit(
    start_announcer: Callable[..., Announcer], listener: socket.socket
) -> None:
    start_announcer(name="é" * 200)
    announce_, _ = next_announce(listener)
    assert announce_.name == "é" * 127


def test_ppserver_with_autodiscovery_announces_its_port(
    start_ppserver: Callable[..., Any], free_port: int
) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("", free_port))
        server = start_ppserver("-a", "-b", BROADCAST, "-p", str(free_port), "-w", "1")
        match = server.wait_for_line(
            r"listening on \S+:(\d+) with \d+ worker\(s\), auto-discovery on UDP (\S+)"
        )
        assert match.group(2) == f"{BROADCAST}:{free_port}"
        announce_, sender = next_announce(sock, timeout=10)
    assert (announce_.tcp_port, sender) == (free_port, "127.0.0.1")
