"""A man in the middle between a real client script and a real ppserver rewrites the openings to offer only
version 1: both ends refuse, name the downgrade in their logs, and the script's jobs run on its local worker.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable, Iterator

import pytest

from clusterlib import Cluster, wait_until
from scriptlib import run_script


class RewritingProxy:
    """Relays TCP connections to `port`, rewriting the version range in the openings of the chosen sides."""

    def __init__(self, port: int, *, to_server: bool, to_client: bool) -> None:
        self.port_to = port
        self.rewrite = {"to_server": to_server, "to_client": to_client}
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._socks: list[socket.socket] = []
        self._start(self._accept)

    def _start(self, target: Callable[..., None], *args: object) -> None:
        thread = threading.Thread(target=target, args=args, daemon=True)
        self._threads.append(thread)
        thread.start()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                client, _ = self.sock.accept()
            except OSError:
                continue
            server = socket.create_connection(("127.0.0.1", self.port_to), timeout=10)
            self._socks += [client, server]
            self._start(self._relay, client, server, self.rewrite["to_server"])
            self._start(self._relay, server, client, self.rewrite["to_client"])

    def _relay(self, src: socket.socket, dst: socket.socket, rewrite: bool) -> None:
        first = True
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                if first and rewrite:  # the opening is the first bytes: same length, range 1-2 -> 1-1
                    data = data.replace(b"ppft-protocol/1-2 ", b"ppft-protocol/1-1 ", 1)
                first = False
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def close(self) -> None:
        self._stop.set()
        for s in [self.sock, *self._socks]:
            s.close()
        for thread in self._threads:
            thread.join(5)


@pytest.fixture
def proxy() -> Iterator[Callable[..., RewritingProxy]]:
    made: list[RewritingProxy] = []

    def make(port: int, **rewrite: bool) -> RewritingProxy:
        made.append(RewritingProxy(port, **rewrite))
        return made[-1]

    yield make
    for p in made:
        p.close()


@pytest.mark.parametrize(
    "to_server, to_client", [(True, True), (True, False), (False, True)], ids=["both", "client", "server"]
)
def test_rewritten_openings_are_refused_as_a_downgrade_by_both_real_ends(
    cluster: Cluster, proxy: Callable[..., RewritingProxy], to_server: bool, to_client: bool
) -> None:
    node = cluster.ppserver(1, extra=("-d",))  # INFO lines too: an authenticated client would show
    mitm = proxy(node.port, to_server=to_server, to_client=to_client)
    ran = run_script("log_until_warned.py", env={"PPSERVER": f"127.0.0.1:{mitm.port}"}).check()
    assert ran.stdout.splitlines() == ["3", "warned"]  # the job ran on the local worker
    assert "downgrade" in ran.stderr, ran.stderr
    assert "man in the middle" in ran.stderr
    if to_server:  # the ppserver saw the client's opening rewritten: it refuses and says why
        wait_until(lambda: "protocol downgrade" in cluster.read_log(node), 10, "the refusal in the log")
        assert "the openings were altered in transit" in cluster.read_log(node)
    assert "authenticated" not in cluster.read_log(node)
