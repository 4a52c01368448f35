"""What ppserver runs with: its settings, the values flags and the config file may hold, and the config file.

`Settings` starts from ppft 1.7's defaults; `read_config` reads ppft's INI config file (`ppserver -c`:
`[general]` secret, secret_file, debug, workers, proto, restart, pid_file, workers_secret,
workers_secret_file, accept_workers, max_queued_jobs, worker_memory_limit, max_jobs_per_worker,
direct_workers, http_token, http_token_file; `[network]` autodiscovery, interface, broadcast, port, timeout,
socket_timeout, allow_plain_loopback, max_handshakes, max_handshakes_per_host, http, http_public) with the
standard library, values written as ppft's ConfigObj reads them (surrounding quotes removed, `#` comments
cut). Each value is checked by the same function whether it comes from a flag or from the file, so both say
the same thing about a bad one.

This module only reads: it must never start anything, print, or hold a secret longer than the `Settings`.
"""

from __future__ import annotations

import configparser
import ipaddress
import os
import pickle
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ppft_protocol import PPFTError
from ppft_worker.runtime import detect_ncpus, parse_memory_limit

from .gate import DEFAULT_MAX_HANDSHAKES, DEFAULT_MAX_HANDSHAKES_PER_HOST

__all__ = [
    "DEFAULT_LOG_FORMAT",
    "DEFAULT_PORT",
    "ConfigError",
    "Settings",
    "UsageError",
    "admission",
    "detect_workers",
    "parse_boolean",
    "parse_broadcast",
    "parse_count",
    "parse_direct_workers",
    "parse_port",
    "parse_proto",
    "parse_seconds",
    "parse_workers",
    "read_config",
]

DEFAULT_PORT = 60000
"""The port ppserver listens on when not told (ppft's `Server.default_port`)."""

DEFAULT_LOG_FORMAT = "%(asctime)s - %(name)s - %(levelname)s - %(message)s"
"""ppft 1.7's log format."""


class UsageError(PPFTError):
    """The command line or the config file asks for something ppserver cannot do (exit status 2)."""


class ConfigError(UsageError):
    """The config file (`-c`) is missing, unreadable, not INI, or holds a value that cannot be used."""


@dataclass
class Settings:
    """What ppserver runs with: built-in defaults, overridden by the config file, overridden by flags."""

    help: bool = False  # -h/--help: print the help, run nothing
    debug: bool = False
    log_format: str = DEFAULT_LOG_FORMAT
    autodiscovery: bool = False
    restart: bool = False
    proto: int | None = None
    config: str | None = None
    interface: str = "0.0.0.0"
    broadcast: str = "255.255.255.255"
    port: int = DEFAULT_PORT
    workers: int | None = None  # None: as many as this process may use CPUs
    secret: str | None = None
    secret_file: str | None = None
    timeout: float | None = None
    socket_timeout: float = 3600.0
    pid_file: str | None = None
    allow_plain_loopback: bool = False  # grant an unsealed channel to a loopback client that asks for one
    workers_secret: str | None = None  # what dial-in workers prove (else $PPFT_WORKERS_SECRET)
    workers_secret_file: str | None = None
    accept_workers: bool = False  # the client secret admits dial-in workers too
    max_handshakes: int = DEFAULT_MAX_HANDSHAKES  # connections in their handshake at once
    max_handshakes_per_host: int = DEFAULT_MAX_HANDSHAKES_PER_HOST  # ... from one address
    max_queued_jobs: int | None = None  # a client's queued jobs before its socket is not read (None: auto)
    worker_memory_limit: int | None = None  # bytes of resident memory a worker may hold (None: no limit)
    max_jobs_per_worker: int | None = None  # a worker is replaced after this many jobs (None: never)
    refs_memory: int = 4 << 30  # bytes of put() objects held for clients at once
    direct_workers: int | None = None  # direct links at once (None: as many as `workers`; 0: off)
    http: str | None = None  # --http [HOST:]PORT: serve the status page, /status.json and /metrics there
    http_token: str | None = None  # required on every request of the status page
    http_token_file: str | None = None  # ... read from this file
    http_public: bool = False  # a status page on a non-loopback address with no token: on purpose
    warnings: list[str] = field(default_factory=list)  # config file remarks, logged once logging is set up


# -- values -------------------------------------------------------------------------------------------
# One checker per kind of value, shared by the flags and the config file. Each raises ValueError with a
# message naming the value and what is accepted, which both callers print as it is.


def parse_port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if not 0 <= value <= 65535:
        raise ValueError(f"{text!r} is not a port number (0-65535)")
    return value


def parse_workers(text: str) -> int | None:
    if text.strip().lower() == "autodetect":
        return None
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise ValueError(f"{text!r} is not a worker count (a whole number >= 0, or 'autodetect')")
    return value


def parse_proto(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -2
    if not -1 <= value <= pickle.HIGHEST_PROTOCOL:
        raise ValueError(
            f"{text!r} is not a pickle protocol (0-{pickle.HIGHEST_PROTOCOL}, or -1 for the highest)"
        )
    return value


def parse_count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise ValueError(f"{text!r} is not a count (a whole number >= 1)")
    return value


def parse_direct_workers(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise ValueError(f"{text!r} is not a count of direct workers (a whole number >= 0; 0 turns them off)")
    return value


def parse_memory(text: str) -> int:
    """A memory size: "2GiB", "1.5GB", "512MiB", or bytes."""
    limit = parse_memory_limit(text, "the worker memory limit")
    assert limit is not None
    return limit


def parse_seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 < value < float("inf"):
        raise ValueError(f"{text!r} is not a number of seconds (> 0)")
    return value


def parse_broadcast(text: str) -> str:
    try:
        ipaddress.IPv4Address(text)
    except ValueError:
        raise ValueError(f"{text!r} is not an IPv4 broadcast address (such as 192.168.1.255)") from None
    return text


def _text(text: str) -> str:
    return text


_BOOLEANS = {
    **dict.fromkeys(("1", "yes", "true", "on"), True),
    **dict.fromkeys(("0", "no", "false", "off"), False),
}


def parse_boolean(text: str) -> bool:
    try:
        return _BOOLEANS[text.strip().lower()]
    except KeyError:
        raise ValueError(f"{text!r} is not a boolean (true/false, yes/no, on/off, 1/0)") from None


# -- the config file ----------------------------------------------------------------------------------

# [section] key -> (Settings attribute, converter)
_CONFIG_KEYS: dict[str, dict[str, tuple[str, Callable[[str], Any]]]] = {
    "general": {
        "secret": ("secret", _text),
        "secret_file": ("secret_file", _text),
        "debug": ("debug", parse_boolean),
        "workers": ("workers", parse_workers),
        "proto": ("proto", parse_proto),
        "restart": ("restart", parse_boolean),
        "pid_file": ("pid_file", _text),
        "workers_secret": ("workers_secret", _text),
        "workers_secret_file": ("workers_secret_file", _text),
        "accept_workers": ("accept_workers", parse_boolean),
        "max_queued_jobs": ("max_queued_jobs", parse_count),
        "worker_memory_limit": ("worker_memory_limit", parse_memory),
        "max_jobs_per_worker": ("max_jobs_per_worker", parse_count),
        "refs_memory": ("refs_memory", parse_memory),
        "direct_workers": ("direct_workers", parse_direct_workers),
        "http_token": ("http_token", _text),
        "http_token_file": ("http_token_file", _text),
    },
    "network": {
        "autodiscovery": ("autodiscovery", parse_boolean),
        "interface": ("interface", _text),
        "broadcast": ("broadcast", parse_broadcast),
        "port": ("port", parse_port),
        "timeout": ("timeout", parse_seconds),
        "socket_timeout": ("socket_timeout", parse_seconds),
        "allow_plain_loopback": ("allow_plain_loopback", parse_boolean),
        "max_handshakes": ("max_handshakes", parse_count),
        "max_handshakes_per_host": ("max_handshakes_per_host", parse_count),
        "http": ("http", _text),
        "http_public": ("http_public", parse_boolean),
    },
}


def _config_value(raw: str) -> str:
    """A value as ppft's ConfigObj reads it: surrounding quotes removed, else a `#` comment cut off."""
    text = raw.strip()
    if text[:1] in ("'", '"'):
        end = text.find(text[0], 1)
        if end > 0 and (not text[end + 1 :].strip() or text[end + 1 :].strip().startswith("#")):
            return text[1:end]
    comment = text.find(" #")
    return text[:comment].rstrip() if comment >= 0 else text


def read_config(path: str) -> tuple[dict[str, Any], list[str]]:
    """({Settings attribute: value} set by the config file at `path`, warnings about what it ignored)."""
    parser = configparser.ConfigParser(interpolation=None, comment_prefixes=("#", ";"), strict=True)
    parser.optionxform = str.lower  # type: ignore[assignment, method-assign]
    try:
        with open(path, encoding="utf-8") as f:
            parser.read_file(f, source=path)
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist: check the path given to -c") from None
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"config file {path} is not UTF-8 text: save it as UTF-8") from None
    except configparser.Error as exc:
        first = str(exc).splitlines()[0].rstrip(".:")
        raise ConfigError(
            f"config file {path} cannot be parsed ({first}); it needs INI sections [general] and [network] "
            f"with 'key = value' lines"
        ) from None
    values: dict[str, Any] = {}
    warnings: list[str] = []
    for section in parser.sections():
        known = _CONFIG_KEYS.get(section.lower())
        if known is None:
            warnings.append(
                f"config file {path}: unknown section [{section}] ignored (known: general, network)"
            )
            continue
        for key, raw in parser.items(section):
            if key not in known:
                warnings.append(
                    f"config file {path}: unknown key {key!r} in [{section}] ignored "
                    f"(known: {', '.join(sorted(known))})"
                )
                continue
            attribute, convert = known[key]
            try:
                values[attribute] = convert(_config_value(raw))
            except ValueError as exc:
                raise ConfigError(
                    f"config file {path}: [{section}] {key}: {exc}; fix or remove that line"
                ) from None
    for key in ("secret", "workers_secret", "http_token"):
        if key in values and os.name == "posix" and os.stat(path).st_mode & 0o077:
            warnings.append(
                f"config file {path} holds the {key.replace('_', ' ')} and other users may read it: "
                f"run `chmod 600 {path}`"
            )
    return values, warnings


def detect_workers() -> int:
    """The CPUs this process may use (affinity mask and cgroup quota): ppserver's default worker count."""
    return detect_ncpus()


def admission(settings: Settings, secret: bytes, workers_secret: bytes | None) -> str:
    """How dial-in workers are admitted, for the startup line ("" when they are not: the default)."""
    if workers_secret is not None:
        same = ", which is the client secret" if workers_secret == secret else ""
        return f", dial-in workers admitted with the workers secret{same}"
    if settings.accept_workers:
        return ", dial-in workers admitted with the client secret (--accept-workers)"
    return ""
