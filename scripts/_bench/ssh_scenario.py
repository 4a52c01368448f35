"""The ssh scenario: an ssh node (`ssh://`: the system ssh into a local sshd) vs a ppserver, same loopback.

Five variants, each a `Server(0, ppservers=...)` client with 2 workers behind one link, in the same run:
`ppserver -w 2` sealed (the default) and unsealed (`--allow-plain-loopback`, `Server(seal=False)`), and an
ssh node with `workers=2` unsealed (the default: ssh encrypts the channel), sealed (`?seal=yes`: ppft's own
sealing inside ssh's), and unsealed with ssh's cipher chosen (`ssh -c aes128-gcm@openssh.com`: AES, which
runs in hardware on most CPUs, where ssh's default is ChaCha20-Poly1305). Each child measures tiny `x + 1`
jobs/s, the latency of a round trip and an echo of the payload scenario's largest size (16 MiB in a full
run); the variants' children alternate, so a slow spell of the machine does not fall on one of them only,
and each variant's best child counts. The report's ratio columns put each variant over the ppserver, sealed
and unsealed.

The sshd is our own (`sshd -D -e -f CONFIG` on 127.0.0.1 and a free port, keys made in a temporary folder,
killed by its process group when the block ends); the client reaches it with `ssh -F none` and that folder's
key and known_hosts, never the user's ~/.ssh. A machine without sshd (or not allowed to run one) skips the
ssh figures, saying why.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from .impls import BenchSetupError
from .procs import Outcome, free_port, ppservers

if TYPE_CHECKING:
    from .runs import Run

__all__ = ["ssh", "sshd"]

_MIB = 1 << 20
_LISTEN_TIMEOUT = 20.0
_SSHD = shutil.which("sshd") or "/usr/sbin/sshd"
_PAIRS = {True: 1, False: 2}  # children of each variant, by run.quick


@contextlib.contextmanager
def sshd() -> Iterator[tuple[str, ...]]:
    """A local sshd until the block ends; yields the ssh command prefix that reaches it
    (`ssh -F none ... -i KEY -p PORT`)."""
    if not os.path.exists(_SSHD) or shutil.which("ssh-keygen") is None:
        raise BenchSetupError("sshd is not installed (scripts/system-deps installs openssh-server)")
    if os.getuid() == 0:
        os.makedirs("/run/sshd", mode=0o755, exist_ok=True)
    user = pwd.getpwuid(os.getuid()).pw_name
    with tempfile.TemporaryDirectory(prefix="ppft-bench-sshd-") as tmp:
        for name in ("host", "user"):
            subprocess.run(
                ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", os.path.join(tmp, name)], check=True,
                stdin=subprocess.DEVNULL,
            )  # fmt: skip
        port = free_port()
        with open(os.path.join(tmp, "host.pub"), encoding="ascii") as host_key:
            known = f"[127.0.0.1]:{port} {host_key.read()}"
        with open(os.path.join(tmp, "known_hosts"), "w", encoding="ascii") as out:
            out.write(known)
        shutil.copy(os.path.join(tmp, "user.pub"), os.path.join(tmp, "authorized_keys"))
        config = os.path.join(tmp, "sshd_config")
        with open(config, "w", encoding="ascii") as out:
            out.write(
                f"ListenAddress 127.0.0.1\nPort {port}\nHostKey {tmp}/host\n"
                f"AuthorizedKeysFile {tmp}/authorized_keys\nPidFile none\nStrictModes no\nUsePAM no\n"
                f"PasswordAuthentication no\nKbdInteractiveAuthentication no\n"
                f"PermitRootLogin prohibit-password\nAllowUsers {user}\n"
            )
        log_file = os.path.join(tmp, "sshd.log")
        with open(log_file, "wb") as log:
            proc = subprocess.Popen(
                [_SSHD, "-D", "-e", "-f", config], stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                start_new_session=True,
            )  # fmt: skip
        try:
            deadline = time.monotonic() + _LISTEN_TIMEOUT
            while not _listening(port):
                if proc.poll() is not None or time.monotonic() > deadline:
                    with open(log_file, "rb") as log_in:
                        tail = log_in.read()[-600:].decode(errors="replace").strip()
                    raise BenchSetupError(f"sshd did not listen on port {port}: {tail}")
                time.sleep(0.02)  # polling /proc for the listening socket, bounded by the deadline
            yield (
                "ssh", "-F", "none", "-o", f"UserKnownHostsFile={tmp}/known_hosts", "-o",
                "StrictHostKeyChecking=yes", "-o", "IdentitiesOnly=yes", "-i", f"{tmp}/user", "-p", str(port),
            )  # fmt: skip
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, 9)
            proc.wait(10)


def _listening(port: int) -> bool:
    wanted = f":{port:04X}"
    with open("/proc/net/tcp", encoding="ascii") as table:
        return any(line.split()[1].endswith(wanted) and line.split()[3] == "0A" for line in list(table)[1:])


_AES = "aes128-gcm@openssh.com"
_VARIANTS = (
    "ppft2-remote",
    "ppft2-remote unsealed",
    "ppft2-ssh",
    "ppft2-ssh sealed",
    "ppft2-ssh -c aes128-gcm",
)
_METRICS = (
    ("tiny jobs/s", "jobs/s", "jobs_per_s"),
    ("latency median", "us", "median_us"),
)


def ssh(run: Run) -> None:
    size, count = run.sizes.payloads[-1]
    echo = f"echo {size // _MIB} MiB" if size >= _MIB else f"echo {size // 1024} KiB"
    params = {
        "n": run.sizes.remote_jobs, "k": run.sizes.latency_round_trips, "rounds": run.sizes.rounds,
        "sizes": [[size, count]], "secret": run.secret,
    }  # fmt: skip
    why = "" if run.available("ppft2", "ppserver") else (run.impls["ppft2"].reason or "no ppserver")
    runs: dict[str, list[Outcome]] = {label: [] for label in _VARIANTS}
    if not why:
        try:
            _children(run, params, runs)
        except BenchSetupError as exc:
            why = str(exc)
    pairs = _PAIRS[run.quick]
    note = f"{params['n']:,} jobs, {params['k']} round trips, {count} x {echo[5:]}; best of {pairs} children"
    for label in _VARIANTS:
        outcomes = runs[label]
        best = _best(outcomes, "jobs_per_s") if outcomes else None
        for metric, unit, key in _METRICS:
            if best is None:
                run.skip("ssh", metric, label, unit, why)
            else:
                run.add("ssh", metric, label, unit, best, key, note)
        payload = _best([_payload(o, size) for o in outcomes], "mib_per_s") if outcomes else None
        if payload is None:
            run.skip("ssh", echo, label, "MiB/s", why)
        else:
            run.add("ssh", echo, label, "MiB/s", payload, "mib_per_s", note)


def _children(run: Run, params: dict[str, Any], runs: dict[str, list[Outcome]]) -> None:
    cmd = run.impls["ppft2"].ppserver_cmd
    with (
        sshd() as prefix,
        ppservers(cmd, run.secret, 1, 2) as sealed,
        ppservers(cmd, run.secret, 1, 2, ("--allow-plain-loopback",)) as plain,
    ):
        node = f"ssh://127.0.0.1?python={run.impls['ppft2'].python or sys.executable}&workers=2"
        variants = {
            "ppft2-remote": {"remote": sealed[0], "sealed": True},
            "ppft2-remote unsealed": {"remote": plain[0], "unsealed": True, "sealed": False},
            "ppft2-ssh": {"remote": node, "ssh": list(prefix), "sealed": False},
            "ppft2-ssh sealed": {"remote": node + "&seal=yes", "ssh": list(prefix), "sealed": True},
        }
        ciphers = subprocess.run(["ssh", "-Q", "cipher"], capture_output=True, text=True, check=False).stdout
        if _AES in ciphers.split():
            aes = [*prefix, "-c", _AES]
            variants["ppft2-ssh -c aes128-gcm"] = {"remote": node, "ssh": aes, "sealed": False}
        for _ in range(_PAIRS[run.quick]):
            for label, variant in variants.items():
                runs[label].append(run.child("ssh", "ppft2", label, "classic", {**params, **variant}))


def _payload(outcome: Outcome, size: int) -> Outcome:
    if outcome.status != "ok":
        return outcome
    return Outcome("ok", outcome.result["payload"][str(size)], 0.0)


def _best(outcomes: list[Outcome], key: str) -> Outcome:
    """The child with the best `key`, or the first failure (a failed child fails the figure)."""
    failed = next((o for o in outcomes if o.status != "ok"), None)
    if failed is not None:
        return failed
    return max(outcomes, key=lambda o: float(o.result[key]))
