"""`python -m ppft_worker --stdio [-w N] [--worker-memory-limit SIZE] [--max-jobs-per-worker N] [-d]`: the
command line of the remote side of an ssh node.

It prepares the process (the channel off fds 0 and 1 first of all), reads the client's secret, says READY
and hands over to `server.StdioServer` until the channel ends. It never writes to the channel itself but
READY, and logs only to stderr (`preamble.LOG_FORMAT`, which the client reads back).
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
from types import FrameType

from .preamble import LOG_FORMAT, READY, TokenError, read_token

__all__ = ["main", "make_parser"]

log = logging.getLogger("ppft.stdio")


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


def _memory(text: str) -> int:
    from ..runtime import memory_option  # noqa: PLC0415 - the runtime only when the flag is given

    return memory_option(text)


def _count(text: str) -> int:
    from ..runtime import count_option  # noqa: PLC0415

    return count_option(text)


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
    parser.add_argument(
        "--worker-memory-limit", type=_memory, default=None, metavar="SIZE",
        help="stop a worker whose resident memory passes SIZE (2GiB, 512MiB); its job fails saying so",
    )  # fmt: skip
    parser.add_argument(
        "--max-jobs-per-worker", type=_count, default=None, metavar="N", help="replace a worker after N jobs"
    )
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
    from ..runtime import detect_ncpus  # noqa: PLC0415 - imported once the client is known to be there
    from .server import StdioServer  # noqa: PLC0415

    workers = args.workers if args.workers is not None else detect_ncpus()
    server = StdioServer(
        chan_in, chan_out, secret, workers, versions=versions, memory_limit=args.worker_memory_limit,
        max_jobs_per_worker=args.max_jobs_per_worker,
    )  # fmt: skip

    def on_signal(signum: int, frame: FrameType | None) -> None:
        server.stop(f"ppft-worker --stdio stopped by {signal.Signals(signum).name}")

    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, on_signal)
    return server.run()
