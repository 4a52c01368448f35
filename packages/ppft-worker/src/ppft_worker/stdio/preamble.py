"""The preamble of the stdio transport: what each side writes before the protocol (docs/protocol.md, "The
stdio transport"), shared by the remote side (`command`) and the client (`ppft_client.ssh.channel`).

It must never write anything, and reads only what `read_token` is asked to read: exactly the token.
"""

from __future__ import annotations

import os
import select
import time

__all__ = [
    "LOG_FORMAT",
    "READY",
    "SECRET_SIZE",
    "TOKEN_MAGIC",
    "TOKEN_SIZE",
    "TOKEN_TIMEOUT",
    "TokenError",
    "make_token",
    "read_token",
]

TOKEN_MAGIC = b"ppft-stdio-secret/1\n"
"""What the client writes first on the channel, before the secret: names the transport and its version."""
SECRET_SIZE = 32
TOKEN_SIZE = len(TOKEN_MAGIC) + SECRET_SIZE
TOKEN_TIMEOUT = 30.0
"""Seconds the remote side waits for the client's token before it gives up."""
READY = b"\x00ppft-stdio-ready/1\x00"
"""What this side writes first on the channel, before the protocol's opening (the client skips anything
that came before it: text a shell startup file printed)."""
LOG_FORMAT = "ppft-worker[%(process)d] %(levelname)s %(message)s"
"""The form of this side's log lines on stderr; the client reads the level back from them."""


class TokenError(Exception):
    """The channel did not start with the client's token."""


def make_token(secret: bytes) -> bytes:
    """The first bytes a client writes on the channel: the magic, then the connection's secret."""
    if len(secret) != SECRET_SIZE:
        raise ValueError(f"the secret of a stdio channel is {SECRET_SIZE} bytes, not {len(secret)}")
    return TOKEN_MAGIC + secret


def read_token(fd: int, timeout: float = TOKEN_TIMEOUT) -> bytes:
    """Read the client's token from `fd` (blocking, at most `timeout` seconds); the secret it carries.
    `TokenError` saying what came instead."""
    data = b""
    deadline = time.monotonic() + timeout
    while len(data) < TOKEN_SIZE:
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([fd], [], [], left)[0]:
            raise TokenError(
                f"no ppft client token on stdin within {timeout:.0f} s: this command is run by a ppft "
                f"client over ssh (ppservers=('ssh://host',)), not by hand"
            )
        chunk = os.read(fd, TOKEN_SIZE - len(data))
        if not chunk:
            raise TokenError(
                "stdin closed before the ppft client's token arrived: the client left (or this command "
                "was run by hand; it is run by a ppft client over ssh)"
            )
        data += chunk
        if not TOKEN_MAGIC.startswith(data[: len(TOKEN_MAGIC)]):
            raise TokenError(
                f"stdin did not start with a ppft client's token (it started with {data[:24]!r}): this "
                f"command is run by a ppft client over ssh (ppservers=('ssh://host',)), not by hand"
            )
    return data[len(TOKEN_MAGIC) :]
