"""`ppserver`: the command line of the ppft network server (console script and `python -m ppft_server`).

Every flag of ppft 1.7's ppserver keeps its letter and meaning, and gains a long form (beside them, ppft 2's
`--secret-file`, `--allow-plain-loopback`, the admission of dial-in workers `--workers-secret`,
`--workers-secret-file`, `--accept-workers`, and the caps `--max-handshakes`, `--max-handshakes-per-host`,
`--max-queued-jobs`, `--direct-workers`, and the status page `--http`, `--http-token`, `--http-token-file`,
`--http-public`); `-c` reads ppft's INI config file (`settings` lists its keys), and flags given on the
command line override it, wherever they stand. Then it binds, writes the pid file, starts auto-discovery
(`-a`) and serves until SIGTERM, SIGINT or SIGHUP (clean stop: clients told, workers stopped, pid file
removed), or `-t` seconds without a client. SIGUSR1 prints the statistics table to stderr.

Anything wrong with the command line or the config file is one line on stderr naming what was wrong and
what to do, and exit status 2; a runtime failure such as a port in use is one line and exit status 1; a
clean stop is 0. This module must never print a secret, nor leave a pid file behind on any exit path it
controls.
"""

from __future__ import annotations

import argparse
import logging
import os
import pickle
import signal
import socket
import sys
import threading
from collections.abc import Callable, Sequence
from types import FrameType
from typing import Any, NoReturn

from ppft_worker import SecretFileError
from ppft_worker.runtime import (
    SECRET_ENV,
    WORKERS_SECRET_ENV,
    resolve_secret,
    resolve_workers_secret,
)

from .gate import DEFAULT_MAX_HANDSHAKES, DEFAULT_MAX_HANDSHAKES_PER_HOST
from .pidfile import PidFileError, remove_pid_file, write_pid_file
from .settings import (
    DEFAULT_PORT,
    ConfigError,
    Settings,
    UsageError,
    admission,
    detect_workers,
    parse_broadcast,
    parse_count,
    parse_direct_workers,
    parse_memory,
    parse_port,
    parse_proto,
    parse_seconds,
    parse_workers,
    read_config,
)
from .version import __version__
from .webpage import http_settings, status_page

__all__ = [
    "EXIT_OK",
    "EXIT_RUNTIME",
    "EXIT_USAGE",
    "build_parser",
    "main",
    "node_server",
    "parse_settings",
    "workers_secret",
]

EXIT_OK, EXIT_RUNTIME, EXIT_USAGE = 0, 1, 2

log = logging.getLogger("ppft.ppserver")


# -- the command line ---------------------------------------------------------------------------------


class _Parser(argparse.ArgumentParser):
    """argparse that raises instead of printing usage and exiting, so every error is one line."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(message)

    def exit(self, status: int = 0, message: str | None = None) -> NoReturn:
        raise UsageError(message or f"exit {status}")


def _checked(convert: Callable[[str], Any]) -> Callable[[str], Any]:
    """An argparse `type=` that reports `convert`'s own message (argparse's is "invalid _port value")."""

    def check(text: str) -> Any:
        try:
            return convert(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    return check


def build_parser() -> argparse.ArgumentParser:
    """The ppserver argument parser (every default is SUPPRESS: only flags really given are set)."""
    p = _Parser(
        prog="ppserver",
        add_help=False,
        allow_abbrev=False,
        argument_default=argparse.SUPPRESS,
        description=f"Parallel Python network server (ppft {__version__}): runs jobs sent by ppft clients.",
        epilog=(
            "To print the server's statistics send it SIGUSR1. SIGTERM or SIGINT stop it cleanly. "
            "The secret is, in order: -s, --secret-file, the config file's secret or secret_file, the "
            f"{SECRET_ENV} environment variable, or ~/.ppft/secret (created, mode 0600, when missing). A "
            "secret on the command line is visible to other users in the process list: prefer a file."
        ),
    )
    add = p.add_argument
    add("-h", "--help", action="store_true", help="show this help message and exit")
    add("-d", "--debug", action="store_true", help="set the log level to debug")
    add("-f", "--log-format", metavar="FORMAT", help="log format (logging's %%(name)s style)")
    add("-a", "--autodiscovery", action="store_true", help="enable the auto-discovery service")
    add("-r", "--restart", action="store_true", help="restart the worker process after each job")
    add("-n", "--proto", metavar="PROTO", type=_checked(parse_proto), help="pickle protocol number")
    add("-c", "--config", metavar="FILE", help="path to a config file")
    add("-i", "--interface", metavar="INTERFACE", help="interface to listen on (default: 0.0.0.0, all)")
    add(
        "-b",
        "--broadcast",
        metavar="BROADCAST",
        type=_checked(parse_broadcast),
        help="broadcast address for auto-discovery (default: 255.255.255.255)",
    )
    add(
        "-p",
        "--port",
        metavar="PORT",
        type=_checked(parse_port),
        help=f"port to listen on (default: {DEFAULT_PORT})",
    )
    add(
        "-w", "--workers", metavar="N", type=_checked(parse_workers), help="number of workers (default: CPUs)"
    )
    add("-s", "--secret", metavar="SECRET", help="secret for authentication")
    add("--secret-file", metavar="PATH", help="read the secret from this file (mode 0600)")
    add(
        "-t",
        "--timeout",
        metavar="SECONDS",
        type=_checked(parse_seconds),
        help="exit after this many seconds with no client connected",
    )
    add(
        "-k",
        "--socket-timeout",
        metavar="SECONDS",
        type=_checked(parse_seconds),
        help="socket timeout in seconds",
    )
    add("-P", "--pid-file", metavar="PIDFILE", help="file to write the process id to")
    add(
        "--allow-plain-loopback",
        action="store_true",
        help="grant an unsealed (authenticated, not encrypted) channel to a client that asks for one "
        "(Server(seal=False)), only when it connects from a loopback address; others stay sealed",
    )
    add(
        "--workers-secret",
        metavar="SECRET",
        help=f"admit dial-in workers (ppft-worker --connect) that prove this secret; clients cannot (also "
        f"${WORKERS_SECRET_ENV}); without it or --accept-workers, dial-in workers are refused",
    )
    add("--workers-secret-file", metavar="PATH", help="read the workers secret from this file (mode 0600)")
    add(
        "--accept-workers",
        action="store_true",
        help="admit dial-in workers that prove the client secret: whoever may submit jobs may also run "
        "them and see every client's functions and arguments",
    )
    add(
        "--max-handshakes",
        metavar="N",
        type=_checked(parse_count),
        help=f"connections still in their handshake at once; over it the ones idle longest are dropped "
        f"(default: {DEFAULT_MAX_HANDSHAKES})",
    )
    add(
        "--max-handshakes-per-host",
        metavar="N",
        type=_checked(parse_count),
        help=f"the same, from one address (default: {DEFAULT_MAX_HANDSHAKES_PER_HOST})",
    )
    add(
        "--max-queued-jobs",
        metavar="N",
        type=_checked(parse_count),
        help="a client's jobs queued here before its connection is no longer read until they run "
        "(default: 1024 per worker, at least 4096: more than a client keeps in flight)",
    )
    add("--worker-memory-limit", metavar="SIZE", type=_checked(parse_memory),
        help="stop a worker whose resident memory passes SIZE (2GiB, 1.5GB, 512MiB); its job fails with "
        "WorkerLostError saying so, and a new worker starts (checked every 0.5 s; default: no limit)",
        )  # fmt: skip
    add("--max-jobs-per-worker", metavar="N", type=_checked(parse_count),
        help="replace a worker after it ran N jobs, as multiprocessing's maxtasksperchild (default: never)",
        )  # fmt: skip
    add("--refs-memory", metavar="SIZE", type=_checked(parse_memory),
        help="bytes of put() objects held for clients at once; a put beyond it is refused (default: 4GiB)",
        )  # fmt: skip
    add("--direct-workers", metavar="N", type=_checked(parse_direct_workers),
        help="worker processes of their own that clients may have at once, each on a connection of "
        "its own (direct links: half the hops of a remote job); 0 turns them off (default: -w)")  # fmt: skip
    add(
        "--http",
        metavar="[HOST:]PORT",
        help="serve a live status page (/), /status.json and Prometheus /metrics there, read-only (HOST "
        "defaults to 127.0.0.1; any other address needs --http-token or --http-public)",
    )
    add(
        "--http-token",
        metavar="TOKEN",
        help="every request of the status page must carry this token (?token=TOKEN, or the header "
        "'Authorization: Bearer TOKEN'); at least 16 characters",
    )
    add("--http-token-file", metavar="PATH", help="read the status page token from this file (mode 0600)")
    add(
        "--http-public",
        action="store_true",
        help="serve the status page on a non-loopback address without a token: anyone who reaches it may "
        "read it (never the secret, function sources or arguments)",
    )
    return p


# -- settings -----------------------------------------------------------------------------------------


def parse_settings(argv: Sequence[str]) -> Settings:
    """The settings the command line `argv` (and the config file it names) ask for; `UsageError` if
    they cannot be used."""
    parser = build_parser()
    try:
        flags = vars(parser.parse_args(list(argv)))
    except argparse.ArgumentError as exc:  # argparse raises this itself for a few errors
        raise UsageError(str(exc)) from None
    settings = Settings()
    config = flags.get("config")
    if config is not None:
        values, settings.warnings = read_config(config)
        if "secret" in flags or "secret_file" in flags:  # a secret on the command line beats the file's
            values.pop("secret", None)
            values.pop("secret_file", None)
        if "workers_secret" in flags or "workers_secret_file" in flags:
            values.pop("workers_secret", None)
            values.pop("workers_secret_file", None)
        for name, value in values.items():
            setattr(settings, name, value)
    for name, value in flags.items():
        setattr(settings, name, value)
    if settings.proto == -1:
        settings.proto = pickle.HIGHEST_PROTOCOL
    if settings.accept_workers and (settings.workers_secret or settings.workers_secret_file):
        raise UsageError(
            "--accept-workers lets the client secret admit dial-in workers, --workers-secret(-file) admits "
            "only the workers secret: give one of them"
        )
    if settings.http is None and (settings.http_token or settings.http_token_file or settings.http_public):
        raise UsageError("--http-token, --http-token-file and --http-public go with --http [HOST:]PORT")
    if settings.http_token and settings.http_token_file:
        raise UsageError("give the status page token once: --http-token or --http-token-file")
    if settings.autodiscovery and ":" in settings.interface and settings.interface != "::":
        raise UsageError(
            f"auto-discovery (-a) broadcasts over IPv4, but the interface is {settings.interface}: give -i "
            f"an IPv4 address (or 0.0.0.0, or ::), or leave -a out"
        )
    return settings


def _configure_logging(settings: Settings) -> None:
    try:
        formatter = logging.Formatter(settings.log_format)
        record = logging.LogRecord("ppft.ppserver", logging.INFO, __file__, 0, "check", None, None)
        formatter.format(record)
    except (ValueError, KeyError, TypeError) as exc:
        raise UsageError(
            f"log format {settings.log_format!r} is not usable ({exc}); use logging's %(name)s style, such "
            f"as '%(asctime)s %(levelname)s %(message)s'"
        ) from None
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter)
    root = logging.getLogger("ppft")
    root.handlers[:] = [handler]
    root.propagate = False
    root.setLevel(logging.DEBUG if settings.debug else logging.WARNING)
    # The startup and shutdown lines of this module are shown even when other INFO lines are not.
    log.setLevel(logging.DEBUG if settings.debug else logging.INFO)


# -- running ------------------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    """Run ppserver with the command line `argv` (default: sys.argv[1:]); the process exit status."""
    try:
        settings = parse_settings(sys.argv[1:] if argv is None else argv)
    except ConfigError as exc:
        return _fail(str(exc), EXIT_USAGE)
    except UsageError as exc:
        return _fail(f"{exc} (ppserver --help lists the options)", EXIT_USAGE)
    if settings.help:
        build_parser().print_help(sys.stdout)
        return EXIT_OK
    try:
        _configure_logging(settings)
    except UsageError as exc:
        return _fail(str(exc), EXIT_USAGE)
    for warning in settings.warnings:
        log.warning("%s", warning)
    if settings.proto is not None:
        log.debug(
            "pickle protocol %d noted: results are pickled with the protocol each client asks for",
            settings.proto,
        )
    try:
        secret = resolve_secret(settings.secret, secret_file=settings.secret_file)
        workers = workers_secret(settings)
        http = http_settings(settings)
    except SecretFileError as exc:
        return _fail(str(exc), EXIT_USAGE)
    except UsageError as exc:
        return _fail(str(exc), EXIT_USAGE)
    return _serve(settings, secret, workers, http)


def workers_secret(settings: Settings) -> bytes | None:
    """The secret dial-in workers prove: `--workers-secret`, `--workers-secret-file` (or the config file's),
    else $PPFT_WORKERS_SECRET; None without one. `UsageError` when --accept-workers is given too."""
    secret = resolve_workers_secret(settings.workers_secret, secret_file=settings.workers_secret_file)
    if secret is not None and settings.accept_workers:
        raise UsageError(
            f"--accept-workers lets the client secret admit dial-in workers, but ${WORKERS_SECRET_ENV} holds "
            f"a workers secret, which admits only its holders: unset {WORKERS_SECRET_ENV} or leave "
            f"--accept-workers out"
        )
    return secret


def node_server(settings: Settings, secret: bytes, workers_secret: bytes | None, workers: int) -> Any:
    """The `NodeServer` the settings ask for, with `workers` local workers (not bound yet)."""
    from .node import NodeServer  # noqa: PLC0415 - parsing a command line must not need the server

    return NodeServer(
        host=settings.interface,
        port=settings.port,
        secret=secret,
        workers=workers,
        restart=settings.restart,
        socket_timeout=settings.socket_timeout,
        idle_timeout=settings.timeout,
        allow_plain_loopback=settings.allow_plain_loopback,
        worker_secret=workers_secret,
        accept_workers=settings.accept_workers,
        max_handshakes=settings.max_handshakes,
        max_handshakes_per_host=settings.max_handshakes_per_host,
        max_queued_jobs=settings.max_queued_jobs,
        worker_memory_limit=settings.worker_memory_limit,
        max_jobs_per_worker=settings.max_jobs_per_worker,
        refs_memory=settings.refs_memory,
        direct_workers=settings.direct_workers,
    )


def _fail(message: str, status: int) -> int:
    print(f"ppserver: error: {message}", file=sys.stderr, flush=True)
    return status


def _serve(
    settings: Settings,
    secret: bytes,
    workers_secret: bytes | None,
    http: tuple[str, int, str | None, bool] | None = None,
) -> int:
    from .announce import AnnounceError, Announcer  # noqa: PLC0415 - only -a needs it; node pulls the rest

    workers = detect_workers() if settings.workers is None else settings.workers
    server = node_server(settings, secret, workers_secret, workers)
    try:
        host, port = server.bind()
    except OSError as exc:
        return _fail(
            f"cannot listen on {settings.interface}:{settings.port}: {exc.strerror or exc}; "
            f"stop whatever uses that port or choose another with -p, and check the interface (-i)",
            EXIT_RUNTIME,
        )
    page: Any = None
    if http is not None:
        page = status_page(server, *http)
        if isinstance(page, str):
            server.close()
            return _fail(page, EXIT_RUNTIME)
    stopped_by: list[str] = []
    restore = _install_signals(server, stopped_by)
    announcer: Announcer | None = None
    pid_written = False
    try:
        if settings.pid_file is not None:
            try:
                write_pid_file(settings.pid_file)  # never through a link, never over a file not ours
            except PidFileError as exc:
                return _fail(str(exc), EXIT_RUNTIME)
            pid_written = True
        discovery = ""
        if settings.autodiscovery:
            announcer = Announcer(
                server.loop,
                interface="0.0.0.0" if settings.interface in ("", "::") else settings.interface,
                broadcast=settings.broadcast,
                port=port,
                tcp_port=port,
                name=getattr(server, "name", None) or socket.gethostname(),
            )
            try:
                announcer.start()
            except AnnounceError as exc:
                announcer = None
                return _fail(str(exc), EXIT_RUNTIME)
            discovery = f", auto-discovery on UDP {settings.broadcast}:{port}"
        if settings.allow_plain_loopback:
            discovery += ", unsealed links granted to loopback clients that ask"
        log.info(
            "ppserver %s (pid %d) listening on %s:%d with %d worker(s)%s%s",
            __version__, os.getpid(), host, port, workers, discovery,
            admission(settings, secret, workers_secret),
        )  # fmt: skip
        if page is not None:
            how = " (token required)" if page.token else " (public)" if page.public else ""
            log.info("status page on %s%s: /status.json, /metrics", page.url, how)
            # Its thread starts on the loop's first round, after the workers: a single-threaded process
            # forks them (ppft_worker.forkstart), which is faster than exec.
            server.loop.call_soon_threadsafe(page.start)
        server.serve_forever()
        log.info("ppserver stopped%s", f" ({stopped_by[0]})" if stopped_by else "")
        return EXIT_OK
    finally:
        if page is not None:
            page.close()
        if announcer is not None:
            announcer.close()
        restore()
        if pid_written and settings.pid_file is not None:
            problem = remove_pid_file(settings.pid_file)
            if problem is not None:
                log.warning("%s", problem)


def _install_signals(server: Any, stopped_by: list[str]) -> Callable[[], None]:
    """SIGTERM/SIGINT/SIGHUP stop the server, SIGUSR1 prints its statistics; returns the undo."""
    if threading.current_thread() is not threading.main_thread():
        return lambda: None  # signal handlers can only be set from the main thread

    def stop(signum: int, frame: FrameType | None) -> None:
        if not stopped_by:
            stopped_by.append(signal.Signals(signum).name)
        server.stop(f"ppserver got {signal.Signals(signum).name}")

    def stats(signum: int, frame: FrameType | None) -> None:
        # Print from the loop, between two rounds of events, not in the middle of whatever it was doing.
        server.loop.call_soon_threadsafe(lambda: _print_stats(server))

    previous: dict[int, Any] = {}
    wanted: list[tuple[str, Callable[[int, FrameType | None], None]]] = [
        ("SIGTERM", stop),
        ("SIGINT", stop),
        ("SIGHUP", stop),
        ("SIGUSR1", stats),
    ]
    for name, handler in wanted:
        signum = getattr(signal, name, None)
        if signum is None:
            continue
        old = signal.getsignal(signum)
        if name == "SIGHUP" and old == signal.SIG_IGN:
            continue  # started under nohup: keep ignoring hangups
        previous[signum] = old
        signal.signal(signum, handler)

    def restore() -> None:
        for signum, old in previous.items():
            signal.signal(signum, old if old is not None else signal.SIG_DFL)

    return restore


def _print_stats(server: Any) -> None:
    sys.stderr.write(server.stats_table())
    sys.stderr.flush()
