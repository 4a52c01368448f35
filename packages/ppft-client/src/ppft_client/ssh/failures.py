"""Why an ssh node's channel failed, in words a person can act on: `explain`.

An ssh node fails in ways a ppserver cannot: ssh itself (the host name, sshd not listening, the key refused,
the host key unknown or changed), the remote shell (no such python), the remote python (no `ppft_worker`,
one too old for `--stdio`), then the protocol (versions that do not meet). `explain` reads what ssh and the
remote wrote on stderr and ssh's exit status, names the cause, quotes ssh's own message (escaped: it is text
from elsewhere), says what to do, and says whether retrying can cure it by itself (`permanent` otherwise:
the scheduler then fails jobs with NoNodeError rather than let them wait for a node that will never come).

This module does no I/O and never raises for any input.
"""

from __future__ import annotations

import signal

from ppft_protocol import printable

from ..version import __version__
from .entries import SshTarget

__all__ = ["explain", "quote"]

_QUOTED_LINES = 6


def quote(lines: list[str], only: tuple[str, ...] = ()) -> str:
    """The last few meaningful lines of `lines` (those holding one of `only`, if given), escaped, as one
    quoted line (`"a / b"`)."""
    kept = [line.strip().strip("@").strip() for line in lines if line.strip().strip("@").strip()]
    if only:
        kept = [line for line in kept if any(needle in line for needle in only)] or kept
    if not kept:
        return ""
    return '"' + printable(" / ".join(kept[-_QUOTED_LINES:]), 1000) + '"'


def _has(lines: list[str], *needles: str) -> bool:
    return any(needle in line for line in lines for needle in needles)


def _exit_text(returncode: int | None) -> str:
    if returncode is None:
        return "ssh did not exit, and was killed"
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = f"signal {-returncode}"
        return f"ssh was killed by {name}"
    return f"ssh exited with status {returncode}"


def explain(
    target: SshTarget, reason: str, returncode: int | None, lines: list[str], *, ready: bool
) -> tuple[str, bool]:
    """(what failed, permanent) for a channel to `target` that ended with `reason` (the stream's or the
    greeting's), ssh's `returncode` (None: it had to be killed), and the `lines` ssh and the remote wrote on
    stderr that are not ppft's own log lines (or are its errors); `ready`: ppft_worker had started."""
    said = quote(lines)
    python = target.python
    host = target.host
    pip = f"{python} -m pip install ppft-worker=={__version__}"
    elsewhere = f"{target.name}?python=/path/to/python"
    by_hand = f"ssh -p {target.port} {target.destination}" if target.port else f"ssh {target.destination}"
    known = f"[{host}]:{target.port}" if target.port else host
    if reason.startswith("cannot run "):  # the ssh program itself (Server(ssh=...))
        return f"{reason}; install OpenSSH's client, or give its path: Server(ssh=('/path/to/ssh',))", True
    if reason.startswith("protocol mismatch"):
        return (
            f"{reason}; this client is ppft-client {__version__}: install the same version on {host} ({pip})",
            True,
        )
    if _has(lines, "REMOTE HOST IDENTIFICATION HAS CHANGED"):
        said = quote(lines, ("IDENTIFICATION HAS CHANGED", "Offending", "Host key verification failed"))
        return (
            f"the host key of {host} has changed, and ssh refused to connect: {said}; if the machine was "
            f"reinstalled, check its new key and remove the old one (ssh-keygen -R '{known}')",
            True,
        )
    if _has(lines, "Host key verification failed", "host key is known", "No matching host key"):
        return (
            f"ssh could not verify the host key of {host}: {said}; connect once by hand ({by_hand}) to check "
            f"and accept it, or add it to known_hosts",
            True,
        )
    if _has(lines, "Permission denied", "Too many authentication failures"):
        return (
            f"ssh could not log in to {target.destination}: {said}; check the key (Server(ssh=('ssh', '-i', "
            f"KEY)) or ~/.ssh/config), the user name and the remote ~/.ssh/authorized_keys (ssh runs with "
            f"BatchMode=yes: it asks for no password or passphrase, so a key with a passphrase must be in "
            f"ssh-agent)",
            True,
        )
    if _has(lines, "usage: ssh", "Bad configuration option", "command-line line", "command-line: line"):
        said = quote(lines, ("unknown option", "Bad configuration", "command-line", "illegal option"))
        return (
            f"ssh refused its command line: {said}; check the ssh command (Server(ssh=...)) and the options "
            f"in {target.name}",
            True,
        )
    if _has(lines, "Could not resolve hostname"):
        return f"ssh cannot resolve the host name {host}: {said}", False
    if _has(lines, "No module named ppft_worker"):
        return (
            f"ppft_worker is not installed for {python} on {host} ({said}); install it there: {pip}; or name "
            f"a python that has it: {elsewhere}",
            True,
        )
    if _has(lines, "unrecognized arguments: --stdio"):
        return (
            f"ppft-worker on {host} ({python}) is too old for ssh nodes (it has no --stdio: {said}); this "
            f"client is ppft-client {__version__}: upgrade it there: {pip}",
            True,
        )
    if _has(lines, "unrecognized arguments: --worker-memory-limit", "unrecognized arguments: --max-jobs-per"):
        return (
            f"ppft-worker on {host} ({python}) is too old for limits on an ssh node's workers "
            f"(worker_memory_limit=, max_jobs_per_worker=: {said}); this client is ppft-client "
            f"{__version__}: upgrade it there: {pip}; or leave those options out of the entry",
            True,
        )
    not_found = _has(lines, "command not found", "No such file or directory")
    if not ready and (returncode in (126, 127) or not_found):
        return (
            f"{python} cannot be run on {host} ({said or _exit_text(returncode)}); install Python 3 there, "
            f"or name the python to use: {elsewhere}",
            True,
        )
    if _has(lines, "Connection refused"):
        return f"ssh cannot connect to {host}: {said} (is sshd running there, on that port?)", False
    if not ready:
        if returncode == 255:
            return f"ssh failed ({_exit_text(returncode)}): {said or 'it said nothing'}", False
        if returncode in (1, 2) and said:  # the remote python ran, and failed: an error, not bad luck
            return (
                f"ppft_worker could not start on {host} ({python} exited with status {returncode}: {said}); "
                f"check that ppft-worker is installed there in full ({pip})",
                True,
            )
        tail = f": {said}" if said else ""
        return f"{reason} ({_exit_text(returncode)}){tail}", False
    tail = f"; it said {said}" if said else ""
    return f"{reason}; {_exit_text(returncode)}{tail}", False
