"""A real OpenSSH server on 127.0.0.1 for the ssh node tests: `Sshd`, and the `sshd` fixture.

Imported by tests as `sshlib` (the root pyproject puts tests/ on the path).

Each test gets its own `sshd -D -e -f CONFIG` on a free port, with a host key, a user key and an
`authorized_keys` made in a temporary folder (`ssh-keygen`), ended by its PID at teardown (and tied to the
test process, so a killed test run leaves no sshd either). The user's own ~/.ssh is never read or written:
clients reach this sshd with `Sshd.prefix()` (`ssh -F none -o UserKnownHostsFile=... -i KEY -p PORT`), or,
as a user whose ~/.ssh/config names the host would, through `Sshd.env()`: a PATH whose `ssh` is a wrapper
that reads this sshd's own client config (`-F`), where the host alias `ppft-test-node` is defined.

sshd needs `/run/sshd` for its privilege separation when run as root (created if missing) and `StrictModes
no` for key files in /tmp. sshd is a system program (`openssh-server`, installed by scripts/system-deps): a
machine without it fails these tests saying so.
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import pytest

from clusterlib import children_of, free_port, listening, pid_alive, tied_to_this_process, wait_until

SSHD = shutil.which("sshd") or "/usr/sbin/sshd"
ALIAS = "ppft-test-node"
"""The host alias the client config (`Sshd.env()`) defines for this sshd (and `node1`, the docs' name)."""


def _keygen(path: Path) -> str:
    """A new ed25519 key pair at `path` (and `path`.pub); the public key line."""
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "ppft-test", "-f", str(path)], check=True,
        stdin=subprocess.DEVNULL,
    )  # fmt: skip
    return path.with_suffix(".pub").read_text().strip()


def cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return ""


def parent_of(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return int(f.read().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return 0


def descendants(pid: int) -> list[int]:
    """Every live process below `pid`, walking /proc's children lists."""
    found: list[int] = []
    todo = children_of(pid)
    while todo:
        kid = todo.pop()
        if pid_alive(kid):
            found.append(kid)
            todo += children_of(kid)
    return found


@dataclass
class Sshd:
    """One running sshd and what a client needs to reach it."""

    dir: Path
    port: int
    user: str
    key: Path  # the user's private key, authorized
    known_hosts: Path  # the host key, as a client that trusts it has it
    popen: subprocess.Popen[bytes] | None  # None until `start`
    log: Path

    def start(self) -> None:
        """Start sshd (`sshd -D -e -f CONFIG`, tied to this process) and wait until it listens."""
        with open(self.log, "ab") as out:
            self.popen = subprocess.Popen(
                tied_to_this_process([SSHD, "-D", "-e", "-f", str(self.dir / "sshd_config")]), stdout=out,
                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            )  # fmt: skip
        popen = self.popen
        try:
            wait_until(lambda: listening(self.port) or popen.poll() is not None, 30, f"sshd on {self.port}")
            assert popen.poll() is None, f"sshd exited: {self.read_log()}"
        except BaseException:
            self.close()
            raise

    def prefix(self, key: Path | None = None, known_hosts: Path | None = None) -> tuple[str, ...]:
        """The ssh command prefix that reaches this sshd without the user's ~/.ssh (Server(ssh=...))."""
        return (
            "ssh", "-F", "none", "-o", f"UserKnownHostsFile={known_hosts or self.known_hosts}",
            "-o", "StrictHostKeyChecking=yes", "-o", "GlobalKnownHostsFile=/dev/null",
            "-o", "IdentitiesOnly=yes", "-o", "ConnectTimeout=10", "-i", str(key or self.key),
            "-p", str(self.port),
        )  # fmt: skip

    def entry(self, python: str | None = None, **options: object) -> str:
        """`ssh://user@127.0.0.1?python=...` with `options` (workers=2, seal="yes") in the query."""
        query = {"python": python or sys.executable, **options}
        text = "&".join(f"{name}={quote(str(value), safe='/~')}" for name, value in query.items())
        return f"ssh://{self.user}@127.0.0.1?{text}"

    def env(self) -> dict[str, str]:
        """An environment whose `ssh` reads this sshd's client config: `ssh://ppft-test-node` reaches it."""
        return {"PATH": f"{self.dir / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}"}

    def read_log(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def processes(self) -> list[int]:
        """Every process below sshd: its sessions, and whatever they run."""
        return descendants(self.popen.pid) if self.popen is not None else []

    def stdio_pids(self) -> list[int]:
        """The remote sides of ssh nodes (`ppft_worker --stdio`) running under this sshd (not their workers,
        which were forked from them and show the same command line)."""
        return [
            pid for pid in self.processes()
            if "ppft_worker --stdio" in cmdline(pid) and "ppft_worker --stdio" not in cmdline(parent_of(pid))
        ]  # fmt: skip

    def ours(self) -> list[str]:
        """What of ppft runs under this sshd ("pid cmdline"), for a failure message."""
        return [f"{pid} {cmdline(pid)}" for pid in self.processes() if "ppft" in cmdline(pid)]

    def close(self) -> None:
        if self.popen is None:
            return
        kids = self.processes()
        if self.popen.poll() is None:
            os.kill(self.popen.pid, signal.SIGKILL)
        self.popen.wait(10)
        for kid in kids:
            if pid_alive(kid):
                os.kill(kid, signal.SIGKILL)


def start_sshd(where: Path, *, port: int | None = None, start: bool = True) -> Sshd:
    """An sshd on 127.0.0.1:`port` (a free one by default) with its keys in `where`; `start=False`: its keys
    and configs only, `Sshd.start()` later."""
    if not os.path.exists(SSHD):
        pytest.fail("sshd is not installed: run scripts/system-deps (Debian's openssh-server) as root")
    where.mkdir(parents=True, exist_ok=True)
    if os.getuid() == 0:
        os.makedirs("/run/sshd", mode=0o755, exist_ok=True)  # privilege separation's empty directory
    user = pwd.getpwuid(os.getuid()).pw_name
    host_public = _keygen(where / "host_ed25519")
    (where / "authorized_keys").write_text(_keygen(where / "user_ed25519") + "\n")
    port = port or free_port()
    known = where / "known_hosts"
    known.write_text(f"[127.0.0.1]:{port},[localhost]:{port} {host_public}\n")
    (where / "sshd_config").write_text(
        f"ListenAddress 127.0.0.1\nPort {port}\nHostKey {where / 'host_ed25519'}\n"
        f"AuthorizedKeysFile {where / 'authorized_keys'}\nPidFile none\nStrictModes no\nUsePAM no\n"
        f"PasswordAuthentication no\nKbdInteractiveAuthentication no\nPermitRootLogin prohibit-password\n"
        f"AllowUsers {user}\nMaxStartups 100\nLogLevel VERBOSE\n"
    )
    client_config = where / "ssh_config"
    client_config.write_text(
        f"Host {ALIAS} node1\n  HostName 127.0.0.1\n  Port {port}\n  User {user}\n"
        f"  IdentityFile {where / 'user_ed25519'}\n  IdentitiesOnly yes\n  UserKnownHostsFile {known}\n"
        f"  StrictHostKeyChecking yes\n"
    )
    bin_dir = where / "bin"
    bin_dir.mkdir(exist_ok=True)
    wrapper = bin_dir / "ssh"
    wrapper.write_text(f'#!/bin/sh\nexec {shutil.which("ssh") or "/usr/bin/ssh"} -F {client_config} "$@"\n')
    wrapper.chmod(0o755)
    sshd = Sshd(where, port, user, where / "user_ed25519", known, None, where / "sshd.log")
    if start:
        sshd.start()
    return sshd


@pytest.fixture
def sshd(tmp_path: Path) -> Iterator[Sshd]:
    server = start_sshd(tmp_path / "sshd")
    try:
        yield server
    finally:
        server.close()


@pytest.fixture(scope="module")
def module_sshd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sshd]:
    """One sshd for every test of a module (for tests that leave it as they found it)."""
    server = start_sshd(tmp_path_factory.mktemp("sshd"))
    try:
        yield server
    finally:
        server.close()
