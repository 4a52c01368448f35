"""Platforms without `fcntl` (Windows): the protocol still imports and works; `import ppft` fails at once
with an error that names the platform and what works there, not a bare ModuleNotFoundError from deep inside.

Run in a fresh interpreter where `fcntl` cannot be imported (`sys.modules["fcntl"] = None`, as on Windows).
"""

from __future__ import annotations

import subprocess
import sys

SCRIPT = """
import sys
sys.modules["fcntl"] = None  # what Windows gives: no such module
from ppft_protocol import Connection, Established, Role
client, server = Connection(Role.CLIENT, b"s" * 32), Connection(Role.SERVER, b"s" * 32)
done = set()
for _ in range(10):
    for a, b in ((client, server), (server, client)):
        data = a.data_to_send()
        if data:
            done |= {id(b) for e in b.receive_data(data) if isinstance(e, Established)}
print("protocol handshake", len(done) == 2)
for name in ("ppft", "ppft_client", "ppft_server.node"):
    try:
        __import__(name)
    except ImportError as exc:
        print(name, type(exc).__name__, exc)
    else:
        print(name, "imported")
"""


def test_without_fcntl_the_protocol_works_and_ppft_says_which_platforms_it_needs() -> None:
    ran = subprocess.run(
        [sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=60, check=False
    )
    assert ran.returncode == 0, ran.stderr
    lines = ran.stdout.splitlines()
    assert lines[0] == "protocol handshake True", ran.stdout
    for line, name in zip(lines[1:], ("ppft", "ppft_client", "ppft_server.node"), strict=True):
        assert line.startswith(f"{name} ImportError ppft's workers need a POSIX system (Linux or macOS)"), (
            line
        )
        assert "has no fcntl" in line and "ppft-protocol (the wire protocol) works on any platform" in line
        assert "WSL" in line
