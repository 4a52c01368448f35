"""Text a peer controls reaches the logs escaped and bounded: one line per event, whatever the peer sent.

A forged log line (a newline followed by what looks like a log record), ANSI escapes, bidi overrides and a
megabyte of text, sent as an opening comment, an AuthFailed reason or a Bye reason, to a real ppserver and
to a real client script: every log line is one of ours, the peer's text shows escaped (``\\n``, ``\\x1b``)
and cut with a marker.
"""

from __future__ import annotations

import contextlib
import re
import socket
import struct
from collections.abc import Callable

import pytest

from clusterlib import SECRET, Cluster, wait_until
from peerlib import FakePeer
from ppft_protocol import AuthFailed, Bye, Connection, Established, NodeInfo, Role
from ppft_protocol.framing import encode_frame_header, encode_opening
from ppft_protocol.messages import encode_message
from scriptlib import run_script

FORGED = "\n2026-01-01 00:00:00,000 - ppft.server - CRITICAL - forged line"
HOSTILE = FORGED + "\x1b[31m\x1b[2J\u202eevil\u2066"
LOG_LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} - ppft")


def _check_lines(text: str, *, longest: int = 2000) -> list[str]:
    """Every line of `text` that mentions ppft is a log line of ours, bounded, with nothing raw in it."""
    assert "\x1b" not in text and "\u202e" not in text and "\u2066" not in text
    assert "CRITICAL - forged line" not in [
        line.partition(" - ppft.server - ")[2] for line in text.splitlines()
    ]
    forged = [line for line in text.splitlines() if line.startswith("2026-01-01 00:00:00,000")]
    assert forged == [], forged
    lines = [line for line in text.splitlines() if "ppft" in line]
    for line in lines:
        assert len(line) <= longest, f"a log line of {len(line)} characters"
    return lines


def _raw_frame(message: object) -> bytes:
    body = b"".join(encode_message(message))  # type: ignore[arg-type]
    return encode_frame_header(message.TYPE, len(body)) + body  # type: ignore[attr-defined]


# -- a real ppserver, hostile clients ------------------------------------------------------------------------


def test_hostile_opening_comment_is_one_escaped_line_in_the_ppserver_log(cluster: Cluster) -> None:
    node = cluster.ppserver(1)
    comment = HOSTILE.encode("utf-8")[:200].decode("ascii", "replace").encode("ascii", "replace")
    text = b"ppft-protocol/9-9 (" + comment + b")"
    with socket.create_connection(("127.0.0.1", node.port), timeout=5) as sock:
        sock.sendall(struct.pack(">Q", len(text)) + text)
        sock.recv(4096)
    wait_until(lambda: "protocol mismatch" in cluster.read_log(node), 10, "the refusal in the ppserver log")
    log = cluster.read_log(node)
    (line,) = [line for line in _check_lines(log) if "protocol mismatch" in line]
    assert "\\n2026-01-01 00:00:00,000 - ppft.server - CRITICAL - forged line\\x1b[31m" in line


def test_opening_announcing_a_megabyte_is_refused_in_one_bounded_line(cluster: Cluster) -> None:
    node = cluster.ppserver(1)
    with socket.create_connection(("127.0.0.1", node.port), timeout=5) as sock:
        sock.sendall(struct.pack(">Q", 1 << 20) + (HOSTILE.encode() * 20_000)[: 1 << 20])
        sock.recv(4096)
    wait_until(lambda: "refused connection" in cluster.read_log(node), 10, "the refusal in the ppserver log")
    (line,) = [line for line in _check_lines(cluster.read_log(node)) if "refused connection" in line]
    assert "are not the length of an opening" in line


def test_megabyte_bye_reason_is_one_bounded_escaped_line_in_the_ppserver_log(cluster: Cluster) -> None:
    node = cluster.ppserver(1, extra=("-d",))
    conn = Connection(Role.CLIENT, SECRET)
    with socket.create_connection(("127.0.0.1", node.port), timeout=5) as sock:
        sock.sendall(conn.data_to_send())
        while not any(isinstance(e, Established) for e in conn.receive_data(sock.recv(65536))):
            sock.sendall(conn.data_to_send())
        conn.send(Bye((HOSTILE * 20_000)[: 1 << 20]))
        sock.sendall(conn.data_to_send())
    wait_until(lambda: "peer closed the connection" in cluster.read_log(node), 10, "the close in the log")
    (line,) = [line for line in _check_lines(cluster.read_log(node)) if "peer closed the connection" in line]
    assert "\\n2026-01-01" in line and "more characters]" in line


# -- a real client script, hostile ppservers -----------------------------------------------------------------


def _refuse_with_a_forged_reason(sock: socket.socket) -> None:
    sock.sendall(encode_opening(1, 2, "hostile server") + _raw_frame(_hello()))
    sock.recv(65536)  # the client's opening, Hello and (soon) Auth
    sock.sendall(_raw_frame(AuthFailed((HOSTILE * 100)[:3800])))
    sock.recv(65536)


def _hello() -> object:
    from ppft_protocol import Hello

    return Hello(bytes(32), 0)


def _authenticate_then_say_bye_at_length(sock: socket.socket) -> None:
    conn = Connection(Role.SERVER, SECRET)
    sock.sendall(conn.data_to_send())
    while not any(isinstance(e, Established) for e in conn.receive_data(sock.recv(65536))):
        sock.sendall(conn.data_to_send())
    conn.send(NodeInfo("server", 1, "9.9.9", "hostile"))
    conn.send(Bye((HOSTILE * 20_000)[: 1 << 20]))
    sock.sendall(conn.data_to_send())
    # Leave as a ppserver that says Bye does: close our side, then read what the client still sends until it
    # closes too. Closing with the client's jobs unread would reset the connection, and a client that sees
    # the reset before it has read the whole Bye rightly logs the reset instead.
    sock.shutdown(socket.SHUT_WR)
    sock.settimeout(10)
    with contextlib.suppress(OSError):
        while sock.recv(65536):
            pass


@pytest.mark.parametrize(
    "handler, what",
    [
        (_refuse_with_a_forged_reason, "server refused our proof"),
        (_authenticate_then_say_bye_at_length, "closed"),
    ],
    ids=["auth-failed-reason", "megabyte-bye-reason"],
)
def test_client_script_logs_a_hostile_ppservers_text_as_one_escaped_line(
    fake_peer: Callable[[Callable[[socket.socket], None]], FakePeer],
    handler: Callable[[socket.socket], None],
    what: str,
) -> None:
    server = fake_peer(handler)
    ran = run_script("log_until_warned.py", env={"PPSERVER": f"127.0.0.1:{server.port}"}).check()
    assert ran.stdout.splitlines() == ["3", "warned"]
    lines = _check_lines(ran.stderr)
    warnings = [line for line in lines if what in line]
    assert warnings, ran.stderr
    for line in warnings:
        assert LOG_LINE.match(line), line
        assert "\\n2026-01-01 00:00:00,000 - ppft.server - CRITICAL - forged line\\x1b[31m" in line
