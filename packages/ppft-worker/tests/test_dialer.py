"""`Dial`: a name resolved off the loop, every address tried, a new one every STAGGER s while none answers.

Real sockets on 127.0.0.1; the resolver's answer is replaced (`socket.getaddrinfo`) to give a name the
addresses each case needs. A "silent" address is a listener whose accept queue is full: Linux drops the
SYNs, so a connection to it neither succeeds nor fails, as with a host behind a firewall that drops packets.
"""

from __future__ import annotations

import errno
import queue
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from ppft_worker.runtime import dialer
from ppft_worker.runtime.dialer import Dial
from ppft_worker.runtime.loop import Loop

TIMEOUT = 10.0


@pytest.fixture
def loop(running_loop: Loop) -> Loop:
    return running_loop


@pytest.fixture
def listener() -> Iterator[socket.socket]:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(8)
    yield sock
    sock.close()


@pytest.fixture
def silent() -> Iterator[socket.socket]:
    """A listener that never accepts, its queue filled: one more connection attempt hangs."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(0)
    fillers = []
    for _ in range(8):  # enough to fill the accept queue and the SYN backlog of listen(0)
        filler = socket.socket()
        filler.setblocking(False)
        filler.connect_ex(sock.getsockname())
        fillers.append(filler)
    time.sleep(0.05)  # let the handshakes of the fillers land in the queue (not a synchronisation of ours)
    yield sock
    for filler in fillers:
        filler.close()
    sock.close()


def refused_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def resolving(monkeypatch: pytest.MonkeyPatch, name: str, addresses: list[tuple[str, int]]) -> None:
    real = socket.getaddrinfo

    def getaddrinfo(host: str, *args: Any, **kwargs: Any) -> Any:
        if host == name:
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", address) for address in addresses]
        return real(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)


def dial(loop: Loop, host: str, port: int, **kwargs: Any) -> tuple[socket.socket | None, str, float]:
    """Dial from the loop's thread; (socket, reason, seconds it took)."""
    out: queue.Queue[tuple[socket.socket | None, str, float]] = queue.Queue()
    started = time.monotonic()
    loop.call_soon_threadsafe(
        lambda: Dial(
            loop, host, port, lambda s, r: out.put((s, r, time.monotonic() - started)), **kwargs
        ).start()
    )
    return out.get(timeout=TIMEOUT)


def test_a_refused_address_moves_on_to_the_next_at_once(loop, listener, monkeypatch):
    good = listener.getsockname()
    resolving(monkeypatch, "two.example", [("127.0.0.1", refused_port()), good])
    sock, reason, _ = dial(loop, "two.example", good[1])
    assert sock is not None and reason == ""
    assert sock.getpeername() == good
    sock.close()


def test_a_silent_address_is_overtaken_by_the_next_after_the_stagger(loop, listener, silent, monkeypatch):
    good = listener.getsockname()
    resolving(monkeypatch, "two.example", [silent.getsockname(), good])
    sock, _, took = dial(loop, "two.example", good[1], timeout=TIMEOUT * 3)
    assert sock is not None and sock.getpeername() == good
    assert took < TIMEOUT  # not the silent address's connect timeout
    sock.close()


def test_every_address_failing_names_each_with_its_reason(loop, silent, monkeypatch):
    refused = ("127.0.0.1", refused_port())
    resolving(monkeypatch, "two.example", [refused, silent.getsockname()])
    sock, reason, _ = dial(loop, "two.example", 1, timeout=0.5)
    assert sock is None
    assert f"{refused[0]}:{refused[1]}: connection refused" in reason
    assert f"{silent.getsockname()[0]}:{silent.getsockname()[1]}: no answer within 0 s" in reason


def test_the_same_failure_everywhere_is_given_once(loop, monkeypatch):
    resolving(monkeypatch, "two.example", [("127.0.0.1", refused_port()), ("127.0.0.1", refused_port())])
    assert dial(loop, "two.example", 1)[1] == "connection refused (is ppserver running there, on that port?)"


def test_a_name_that_does_not_resolve_is_the_reason(loop):
    sock, reason, _ = dial(loop, "no-such-host.invalid", 1)
    assert sock is None and reason.startswith("cannot resolve host 'no-such-host.invalid' (")


def test_a_resolver_that_raises_anything_is_the_reason_not_a_crash(loop, monkeypatch):
    def getaddrinfo(*args: Any, **kwargs: Any) -> Any:
        raise UnicodeError("encoding with 'idna' codec failed (UnicodeError: label empty or too long)")

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    sock, reason, _ = dial(loop, "x.example", 1)
    assert sock is None and "cannot resolve host 'x.example' (not a valid host name: encoding with" in reason


def test_no_file_descriptor_left_is_that_addresses_failure(loop, listener, monkeypatch):
    real = socket.socket
    calls = [0]

    def no_more_files(*args: Any, **kwargs: Any) -> socket.socket:
        calls[0] += 1
        if calls[0] == 1:
            raise OSError(errno.EMFILE, "Too many open files")
        return real(*args, **kwargs)

    good = listener.getsockname()
    resolving(monkeypatch, "two.example", [good, good])  # the same address twice is tried once
    monkeypatch.setattr(dialer.socket, "socket", no_more_files)
    sock, reason, _ = dial(loop, "two.example", good[1])
    assert sock is None and reason == "cannot open a socket (Too many open files)"


def test_a_slow_resolver_does_not_hold_the_loop(loop, monkeypatch):
    release = threading.Event()
    real = socket.getaddrinfo

    def getaddrinfo(host: str, *args: Any, **kwargs: Any) -> Any:
        if host == "slow.example":
            release.wait(TIMEOUT)
        return real(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    loop.call_soon_threadsafe(lambda: Dial(loop, "slow.example", 1, lambda s, r: None).start())
    ran = threading.Event()
    loop.call_soon_threadsafe(lambda: loop.call_later(0.0, ran.set))
    try:
        assert ran.wait(TIMEOUT), "the loop was held by the resolver"
    finally:
        release.set()
