"""The remote side of an ssh node: `python -m ppft_worker --stdio [-w N] [-d]`.

A ppft client with an `ssh://host` node runs `ssh ... host PYTHON -m ppft_worker --stdio` and speaks the
ppft protocol over that one channel: this process is the server end of it, with a pool of worker processes
behind it (`stdio_server.StdioServer`), and needs nothing on the remote machine but `ppft-worker` installed.
No port is opened, no daemon stays, no secret is kept on disk.

    client --ssh stdin--> TOKEN (magic + a fresh 32-byte secret), then the protocol --> this process
    client <--ssh stdout-- READY (a fixed marker), then the protocol <----------------- this process
    client <--ssh stderr-- log lines ("ppft-worker[pid] LEVEL message"), shown in the client's log

The order of things, and what each guards against:

1. fd 1 is the channel, and nothing else may ever write there: the channel moves to private descriptors
   (close-on-exec) at once, fd 0 becomes /dev/null and fd 1 a copy of fd 2, so a stray `print`, a C
   library's printf or a job's child process writes into the log, never into the protocol stream.
2. The secret arrives first on stdin, never on a command line (where `ps` shows it): the client makes a
   new one for every connection. A stdin that does not start with the token within `TOKEN_TIMEOUT` seconds
   (someone typing, a wrong program at the other end) ends this process with status 2 and a line saying so.
3. READY goes out before the protocol, so the client can tell where the protocol starts even when the
   remote shell printed something first (a ~/.bashrc that echoes: that text is skipped and reported).
4. Then the protocol, as a ppserver's with one client: the client must prove the secret (HMAC handshake)
   before anything is accepted; an unsealed channel is agreed when the client asks (ssh encrypts already).

Its stdin closing means the client is gone (it exited, was killed, or its ssh died): the process then stops
its workers and exits, so nothing of ours stays on the remote machine. SIGTERM, SIGINT and SIGHUP do the
same, telling the client why.
"""

from __future__ import annotations

import argparse
import logging
import os
import select
import signal
import sys
import time
from types import FrameType

__all__ = [
    "LOG_FORMAT",
    "READY",
    "SECRET_SIZE",
    "TOKEN_MAGIC",
    "TOKEN_SIZE",
    "TOKEN_TIMEOUT",
    "TokenError",
    "main",
    "make_token",
    "read_token",
]

log = logging.getLogger("ppft.stdio")

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


def _take_stdio() -> tuple[int, int]:
    """Move the channel off fds 0 and 1 (to close-on-exec descriptors): from here on fd 0 reads /dev/null
    and fd 1 writes where fd 2 does, for this process and every process it starts."""
    chan_in = os.dup(0)
    chan_out = os.dup(1)
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    os.dup2(2, 1)
    return chan_in, chan_out


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _workers(text: str) -> int:
    n = int(text) if text.isdigit() else 0
    if n < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of worker processes >= 1")
    return n


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ppft-worker --stdio",
        description="The remote side of a ppft ssh node: speaks the ppft protocol on stdin and stdout, runs "
        "the jobs on a pool of worker processes. A ppft client runs it over ssh (ppservers=('ssh://host',)); "
        "it is not run by hand.",
    )
    parser.add_argument("--stdio", action="store_true", required=True)
    parser.add_argument(
        "-w", "--workers", type=_workers, default=None, metavar="N",
        help="worker processes (default: the CPUs this process may use)",
    )  # fmt: skip
    parser.add_argument("-d", "--debug", action="store_true", help="log debug messages")
    return parser


def main(argv: list[str], *, versions: tuple[int, int] | None = None) -> int:
    """`ppft-worker --stdio ...`; returns the exit code. `versions`: the protocol versions to speak (left out:
    all this package speaks; tests pin them)."""
    chan_in, chan_out = _take_stdio()  # first of all: nothing may write to the channel but the protocol
    parser = make_parser()
    args = parser.parse_args(argv)  # a bad option: usage on stderr (fd 2), status 2
    logging.basicConfig(
        stream=sys.stderr, level=logging.DEBUG if args.debug else logging.INFO, format=LOG_FORMAT
    )
    try:
        secret = read_token(chan_in)
    except TokenError as exc:
        log.error("%s", exc)
        return 2
    except OSError as exc:
        log.error("cannot read stdin: %s", exc.strerror or exc)
        return 2
    try:
        _write_all(chan_out, READY)
    except OSError:
        return 0  # the client is gone already
    from .cpus import detect_ncpus  # noqa: PLC0415 - imported once the client is known to be there
    from .stdio_server import StdioServer  # noqa: PLC0415

    workers = args.workers if args.workers is not None else detect_ncpus()
    server = StdioServer(chan_in, chan_out, secret, workers, versions=versions)

    def on_signal(signum: int, frame: FrameType | None) -> None:
        server.stop(f"ppft-worker --stdio stopped by {signal.Signals(signum).name}")

    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, on_signal)
    return server.run()
