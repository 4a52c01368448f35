"""ppft 1.7's `ppft.server`: ppserver as a library, mapped onto `ppft_server` (`python -m ppft.server`).

    server = create_network_server(["-p", "35000", "-w", "2", "-s", "secret"])
    server.listen()        # serves until server.stop() (another thread), a signal, or -t seconds idle

`create_network_server(argv)` takes ppserver's command line (every flag of `ppserver --help`) and returns a
`NetworkServer`, already bound (so `server.port` is known and a port in use is reported at once);
`parse_config(path)` reads ppserver's INI config file into ppft 1.7's `(args, autodiscovery, debug)`;
`print_usage()` prints ppserver's help. Unlike ppft 1.7, a bad command line or config file raises a
`UsageError`/`ConfigError` (both `PPFTError`s) instead of exiting the interpreter. This module starts nothing
but what its caller asks for: no thread, socket or worker exists before `create_network_server`.
"""

from __future__ import annotations

import logging
import os
import socket
import sys
import threading
from collections.abc import Sequence
from typing import Any

from ppft_protocol import PPFTError
from ppft_server import cli
from ppft_server.announce import Announcer
from ppft_server.node import NodeServer
from ppft_server.pidfile import PidFileError, remove_pid_file, write_pid_file
from ppft_server.settings import ConfigError, Settings, UsageError, detect_workers, read_config
from ppft_worker.runtime import resolve_secret

from ..common import copyright
from ..version import __version__

__all__ = [
    "STAT_SIGNAL",
    "ConfigError",
    "NetworkServer",
    "UsageError",
    "_NetworkServer",
    "__version__",
    "copyright",
    "create_network_server",
    "main",
    "parse_config",
    "print_usage",
    "version",
]

version = __version__

STAT_SIGNAL = "SIGUSR1"
"""The signal that makes a running ppserver print its statistics (to stderr)."""

log = logging.getLogger("ppft.ppserver")

main = cli.main
"""ppserver's entry point: `main(argv)` runs it and returns the exit status (`python -m ppft.server`)."""

_CONFIG_TO_ARGS = {"workers": "ncpus"}  # a Settings attribute whose ppft 1.7 keyword differs


class NetworkServer:
    """A ppserver in this process: `listen()` (or `serve_forever()`) serves until `stop()`.

    ppft 1.7's `_NetworkServer` was a `Server` subclass with its own thread per client; this wraps
    ppft_server's `NodeServer` (one I/O loop) and keeps ppft 1.7's names: `host`, `port`, `listen`,
    `broadcast`, `print_stats`, `get_ncpus`, `_exiting`, `destroy`."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.host = settings.interface
        self.bcast = settings.broadcast
        self.timeout = settings.timeout
        self.socket_timeout = settings.socket_timeout
        self._exiting = False
        self._serving = False
        self._done = threading.Event()
        self._announcer: Announcer | None = None
        self._autodiscovery = settings.autodiscovery
        secret = resolve_secret(settings.secret, secret_file=settings.secret_file)
        self._ncpus = detect_workers() if settings.workers is None else settings.workers
        self.node: NodeServer = cli.node_server(settings, secret, cli.workers_secret(settings), self._ncpus)
        try:
            self.host, self.port = self.node.bind()
        except OSError as exc:
            self.node.close()
            raise ServeError(
                f"cannot listen on {settings.interface}:{settings.port}: {exc.strerror or exc}; stop "
                f"whatever uses that port or choose another with -p, and check the interface (-i)"
            ) from None
        if settings.pid_file is not None:
            try:
                write_pid_file(settings.pid_file)  # never through a link, never over a file not ours
            except PidFileError as exc:
                self.node.close()
                raise ServeError(str(exc)) from None

    def __enter__(self) -> NetworkServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.destroy()

    def listen(self) -> None:
        """Serve until `stop()`/`destroy()` (from another thread or a signal handler) or `-t` idle seconds;
        ppft 1.7's name for it. With `-a`, announces the server for auto-discovery meanwhile."""
        if self._exiting:
            raise ServeError("this ppserver was stopped; create a new one with create_network_server(argv)")
        self._serving = True
        try:
            if self._autodiscovery:
                self.broadcast()
            self.node.serve_forever()
        finally:
            self._exiting = True
            self._cleanup()
            self._done.set()

    serve_forever = listen

    def broadcast(self) -> None:
        """Start announcing this server for auto-discovery (ppserver -a); `listen` does it when -a was
        given. Call it before `listen`, or from the thread that runs it."""
        if self._announcer is not None:
            return
        announcer = Announcer(
            self.node.loop,
            interface="0.0.0.0" if self.host in ("", "::") else self.host,
            broadcast=self.bcast,
            port=self.port,
            tcp_port=self.port,
            name=self.node.name or socket.gethostname(),
        )
        announcer.start()
        self._announcer = announcer

    def stop(self) -> None:
        """Make `listen()` return: clients are told, workers stop. Safe from any thread and signal handler."""
        self._exiting = True
        self.node.stop("ppserver stopped by its owner")

    def destroy(self, timeout: float = 10.0) -> None:
        """Stop and release the socket and the workers, whether `listen()` runs (on another thread: waits
        up to `timeout` s for it to return) or never ran. Idempotent."""
        self._exiting = True
        if self._serving:
            self.node.stop("ppserver destroyed")
            if not self._done.wait(timeout):
                log.error("ppserver did not stop within %.0f s", timeout)
            return
        self.node.close()
        self._cleanup()

    def _cleanup(self) -> None:
        if self._announcer is not None:
            self._announcer.close()
            self._announcer = None
        pid_file = self.settings.pid_file
        if pid_file is not None and os.path.lexists(pid_file):
            problem = remove_pid_file(pid_file)
            if problem is not None:
                log.warning("%s", problem)

    def get_ncpus(self) -> int:
        """The number of local workers."""
        return self._ncpus

    def stats_table(self) -> str:
        """ppserver's statistics table (what SIGUSR1 prints)."""
        return self.node.stats_table()

    def print_stats(self) -> None:
        """Print the statistics table to stdout, as ppft 1.7's server did."""
        sys.stdout.write(self.stats_table())


_NetworkServer = NetworkServer
"""ppft 1.7's name of the class."""


class ServeError(PPFTError):
    """ppserver cannot start serving (the port is taken, or the server was already stopped)."""


def print_usage() -> None:
    """Print ppserver's help (every flag, with the long forms ppft 2 adds)."""
    cli.build_parser().print_help(sys.stdout)


def parse_config(file_loc: str) -> tuple[dict[str, Any], bool, bool]:
    """Read ppserver's config file as ppft 1.7 did: `(args, autodiscovery, debug)`, `args` holding the
    keywords of ppft 1.7's `_NetworkServer` (secret, interface, broadcast, port, ncpus, proto, restart,
    timeout, socket_timeout, pid_file; and secret_file, which ppft 2 adds). Raises `ConfigError` for a
    missing or malformed file (ppft 1.7 exited the interpreter)."""
    values, warnings = read_config(file_loc)
    for warning in warnings:
        log.warning("%s", warning)
    autodiscovery = bool(values.pop("autodiscovery", False))
    debug = bool(values.pop("debug", False))
    args = {_CONFIG_TO_ARGS.get(name, name): value for name, value in values.items()}
    return args, autodiscovery, debug


def create_network_server(argv: Sequence[str]) -> NetworkServer:
    """A ppserver configured by the command line `argv` (as `ppserver` takes it), bound but not serving
    yet: call `listen()`. `-h` prints the help and raises `SystemExit(0)`, as ppft 1.7 did; a bad command
    line raises `UsageError`, a bad config file `ConfigError`."""
    settings = cli.parse_settings(argv)
    if settings.help:
        print_usage()
        raise SystemExit(0)
    _configure_logging(settings)
    for warning in settings.warnings:
        log.warning("%s", warning)
    return NetworkServer(settings)


def _configure_logging(settings: Settings) -> None:
    """ppft 1.7's create_network_server set up logging from -d/-f; so does this one, on the "ppft" logger."""
    root = logging.getLogger("ppft")
    mine: list[logging.Handler] = [h for h in root.handlers if getattr(h, "_ppft_network_server", False)]
    if not mine:
        stream = logging.StreamHandler(sys.stderr)
        stream._ppft_network_server = True  # type: ignore[attr-defined]
        root.addHandler(stream)
        mine = [stream]
    for handler in mine:
        handler.setFormatter(logging.Formatter(settings.log_format))
    root.setLevel(logging.DEBUG if settings.debug else logging.WARNING)
