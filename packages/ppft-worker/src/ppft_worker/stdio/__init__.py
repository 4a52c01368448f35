"""The remote side of an ssh node: `python -m ppft_worker --stdio [-w N] [-d]`.

A ppft client with an `ssh://host` node runs `ssh ... host PYTHON -m ppft_worker --stdio` and speaks the
ppft protocol over that one channel: this process is the server end of it, with a pool of worker processes
behind it (`server.StdioServer`), and needs nothing on the remote machine but `ppft-worker` installed.
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

The room: `preamble` (what each side writes before the protocol, shared with the client), `command` (the
command line: `command.main`, through `main` here), `server` (`StdioServer`). Importing the package loads
`preamble` only.
"""

from .preamble import (
    LOG_FORMAT,
    READY,
    SECRET_SIZE,
    TOKEN_MAGIC,
    TOKEN_SIZE,
    TOKEN_TIMEOUT,
    TokenError,
    make_token,
    read_token,
)

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


def main(argv: list[str]) -> int:
    """`python -m ppft_worker --stdio ...`: the remote side of an ssh node (`command.main`, loaded now)."""
    from .command import main as run  # noqa: PLC0415 - the command line only when it runs

    return run(argv)
