"""The `ppservers` entries that name an ssh node, and the command line that reaches one.

    ssh://[user@]host[:port][?python=PATH&workers=N&seal=yes&worker_memory_limit=SIZE&max_jobs_per_worker=N]

`parse_ssh_entry` reads one entry into an `SshTarget` (`ValueError` naming the entry, what is wrong and the
accepted form); `ssh_command` builds the argument vector of the system `ssh` (so the user's ~/.ssh/config,
keys, agent and ProxyJump all apply):

    PREFIX -T -x -e none -o BatchMode=yes -o ClearAllForwardings=yes [-p PORT] -- DESTINATION \\
        exec PYTHON -m ppft_worker --stdio [-w N] [--worker-memory-limit BYTES] [--max-jobs-per-worker N]

`-T`: no terminal (a binary channel); `-e none`: no escape character, so no byte sequence of the protocol
can disconnect it; `BatchMode=yes`: ssh never waits for a password or a host-key question nobody can
answer; `ClearAllForwardings=yes`: the user's port forwardings for that host are not set up again (a second
forwarding of the same port would fail). The remote command is read by the remote user's shell: every part
is quoted, but a python path may start with `~/` (the remote home). No secret is ever on this command line.

This module does no I/O.
"""

from __future__ import annotations

import shlex
import shutil
from collections.abc import Iterable
from typing import Any, NamedTuple
from urllib.parse import parse_qsl, urlsplit

from ppft_worker.runtime import parse_memory_limit

__all__ = [
    "DEFAULT_PYTHON",
    "DEFAULT_SSH",
    "SSH_FORM",
    "SshTarget",
    "check_ssh_prefix",
    "is_ssh_entry",
    "parse_ssh_entry",
    "remote_command",
    "split_ssh_entries",
    "ssh_command",
    "ssh_program_problem",
]

DEFAULT_SSH = ("ssh",)
"""The command prefix for ssh nodes when `Server(ssh=...)` is left out."""
DEFAULT_PYTHON = "python3"
"""The remote python when an entry names none (`?python=`)."""
SSH_FORM = (
    "'ssh://[user@]host[:port]' with options as a query: '?python=/opt/venv/bin/python&workers=8&seal=yes'"
)
_OPTIONS = ("python", "workers", "seal", "worker_memory_limit", "max_jobs_per_worker")
_YES = ("1", "yes", "true", "on")
_NO = ("0", "no", "false", "off")


class SshTarget(NamedTuple):
    """One ssh node: where to log in, and what to run there."""

    name: str  # "ssh://user@host:port": the node's name in get_stats() and log lines
    host: str
    user: str | None
    port: int | None  # None: ssh's own choice (22, or the user's ~/.ssh/config)
    python: str  # the remote interpreter that has ppft-worker installed
    workers: int | None  # worker processes on the remote (None: its CPU count)
    seal: bool  # seal the channel with ppft's own encryption too (ssh encrypts it already)
    entry: str = ""  # the entry as it was written (stripped)
    memory_limit: int | None = None  # bytes: a worker whose resident memory passes it is stopped
    max_jobs_per_worker: int | None = None  # a worker is replaced after that many jobs

    @property
    def destination(self) -> str:
        return f"{self.user}@{self.host}" if self.user else self.host


def is_ssh_entry(entry: object) -> bool:
    return isinstance(entry, str) and entry.strip()[:6].lower() == "ssh://"


def split_ssh_entries(entries: Iterable[Any]) -> tuple[tuple[Any, ...], list[SshTarget]]:
    """(the other entries, the ssh ones) of `ppservers`; `ValueError` naming an ssh entry that cannot be
    read."""
    rest: list[Any] = []
    found: list[SshTarget] = []
    for entry in entries:
        if is_ssh_entry(entry):
            found.append(parse_ssh_entry(entry))
        else:
            rest.append(entry)
    return tuple(rest), found


def _bad(entry: str, what: str) -> ValueError:
    return ValueError(f"ssh node {entry!r}: {what}; write {SSH_FORM}")


def parse_ssh_entry(entry: str) -> SshTarget:
    """The `SshTarget` of `ssh://[user@]host[:port][?options]`; `ValueError` saying what is wrong."""
    text = entry.strip()
    if any(ch.isspace() or ord(ch) < 32 for ch in text):
        raise _bad(entry, "an ssh address holds no spaces or control characters")
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError as exc:
        raise _bad(entry, str(exc)) from None
    if parts.scheme.lower() != "ssh":
        raise _bad(entry, "it does not start with ssh://")
    if parts.path not in ("", "/") or parts.fragment:
        raise _bad(entry, f"unexpected {parts.path or '#' + parts.fragment!r} after the host")
    if parts.password is not None:
        raise _bad(entry, "no password goes in an ssh address (ssh uses your keys and agent)")
    netloc = parts.netloc.rpartition("@")[2]
    host = netloc[1 : netloc.find("]")] if netloc.startswith("[") else netloc.partition(":")[0]
    user = parts.username
    if not host:
        raise _bad(entry, "the host is missing")
    if host.startswith("-") or (user is not None and (not user or user.startswith("-"))):
        raise _bad(entry, "a host or user name cannot start with '-' (nor be empty)")
    if port == 0:
        raise _bad(entry, "port 0 is not a port sshd listens on")
    options = _options(entry, parts.query)
    shown = f"[{host}]" if ":" in host else host
    name = "ssh://" + (f"{user}@" if user else "") + shown + (f":{port}" if port else "")
    python = options.get("python", DEFAULT_PYTHON)
    workers = _workers(entry, options.get("workers"))
    seal = _seal(entry, options.get("seal"))
    memory_limit = _memory(entry, options.get("worker_memory_limit"))
    max_jobs = _max_jobs(entry, options.get("max_jobs_per_worker"))
    return SshTarget(name, host, user, port, python, workers, seal, text, memory_limit, max_jobs)


def _options(entry: str, query: str) -> dict[str, str]:
    try:
        # a '+' is itself (a path may hold one), not a space: %20 is a space
        pairs = parse_qsl(query.replace("+", "%2B"), keep_blank_values=True, strict_parsing=bool(query))
    except ValueError:
        raise _bad(entry, f"the options {query!r} are not 'name=value' pairs joined by '&'") from None
    options: dict[str, str] = {}
    for key, value in pairs:
        if key not in _OPTIONS:
            raise _bad(entry, f"unknown option {key!r} (the options are {', '.join(_OPTIONS)})")
        if key in options:
            raise _bad(entry, f"option {key!r} is given twice")
        if not value or any(ord(ch) < 32 for ch in value):
            raise _bad(entry, f"option {key!r} needs a value")
        options[key] = value
    return options


def _workers(entry: str, text: str | None) -> int | None:
    if text is None:
        return None
    if not text.isdigit() or not 1 <= int(text) <= 65535:
        raise _bad(entry, f"workers={text!r} is not a number of worker processes >= 1")
    return int(text)


def _memory(entry: str, text: str | None) -> int | None:
    try:
        return parse_memory_limit(text, "worker_memory_limit")
    except ValueError as exc:
        raise _bad(entry, str(exc)) from None


def _max_jobs(entry: str, text: str | None) -> int | None:
    if text is None:
        return None
    if not text.isdigit() or int(text) < 1:
        raise _bad(entry, f"max_jobs_per_worker={text!r} is not a whole number >= 1 (jobs per worker)")
    return int(text)


def _seal(entry: str, text: str | None) -> bool:
    if text is None:
        return False
    if text.lower() in _YES:
        return True
    if text.lower() in _NO:
        return False
    raise _bad(entry, f"seal={text!r} is not yes or no")


def check_ssh_prefix(ssh: object) -> tuple[str, ...]:
    """`Server(ssh=...)` as a tuple of arguments: a tuple or list of strings (a string is split as a shell
    would). `TypeError` or `ValueError` saying what is wrong."""
    if isinstance(ssh, str):
        ssh = shlex.split(ssh)
    if not isinstance(ssh, (tuple, list)) or not all(isinstance(arg, str) for arg in ssh):
        raise TypeError(
            f"ssh must be the ssh command as a tuple of strings, such as ('ssh', '-i', '~/.ssh/cluster'), "
            f"not {type(ssh).__name__} {ssh!r}"
        )
    if not ssh or not ssh[0]:
        raise ValueError("ssh must name the ssh program first: ('ssh',), or ('/usr/bin/ssh', '-F', FILE)")
    return tuple(ssh)


def ssh_program_problem(prefix: tuple[str, ...]) -> str:
    """Why the program of `prefix` cannot run here ("" when it can)."""
    if shutil.which(prefix[0]) is None:
        return (
            f"the ssh program {prefix[0]!r} is not found here (PATH); install OpenSSH's client "
            f"(apt install openssh-client) or give its path: Server(ssh=('/usr/bin/ssh',))"
        )
    return ""


def remote_command(target: SshTarget) -> str:
    """What the remote user's shell runs: `exec PYTHON -m ppft_worker --stdio [-w N] [limits]`, quoted."""
    python = target.python
    # a path in the remote home: the shell expands an unquoted ~/
    python_word = "~/" + shlex.quote(python[2:]) if python.startswith("~/") else shlex.quote(python)
    words = ["exec", python_word, "-m", "ppft_worker", "--stdio"]
    if target.workers is not None:
        words += ["-w", str(target.workers)]
    if target.memory_limit is not None:
        words += ["--worker-memory-limit", shlex.quote(str(target.memory_limit))]
    if target.max_jobs_per_worker is not None:
        words += ["--max-jobs-per-worker", shlex.quote(str(target.max_jobs_per_worker))]
    return " ".join(words)


def ssh_command(prefix: tuple[str, ...], target: SshTarget) -> list[str]:
    """The full argument vector of `ssh` for `target`."""
    argv = [*prefix, "-T", "-x", "-e", "none", "-o", "BatchMode=yes", "-o", "ClearAllForwardings=yes"]
    if target.port is not None:
        argv += ["-p", str(target.port)]
    return [*argv, "--", target.destination, remote_command(target)]
