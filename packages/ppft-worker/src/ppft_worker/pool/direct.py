"""How a ppserver starts a direct worker: a worker process of its own for one client's connection.

A client asks for a direct link with `Attach`; the ppserver hands the connected socket to a new process
(`start_direct_worker`), which runs a new handshake with the client and then the worker loop on it
(`ppft_worker.process.direct`). The process is exec'd like a pool's worker started by exec (`spawn`), the
socket as its fds 0 and 1, with `PPFT_WORKER_DIRECT` saying what its channel may be, and the write end of
the ppserver's report pipe named in `PPFT_WORKER_REPORT_FD`, the read end of its ref pipe in
`PPFT_WORKER_REFS_FD`. One exec per link: a client opens its direct
links when it connects, so the fork server, which makes a pool's replacements cheap, is an optimisation not
made here.
"""

from __future__ import annotations

import socket
import subprocess

from ..process import AES_GCM_ENV, DIRECT_ENV, REFS_FD_ENV, REPORT_FD_ENV
from .spawn import worker_command, worker_env

__all__ = ["start_direct_worker"]


def start_direct_worker(
    sock: socket.socket,
    secret: bytes,
    *,
    allow_plain: bool,
    aes_gcm: bool,
    report_fd: int = -1,
    refs_fd: int = -1,
) -> subprocess.Popen[bytes]:
    """Start a direct worker serving the client on `sock` (connected; the caller keeps its own descriptor,
    and writes nothing more on it). `secret`: what the client proves again; `allow_plain`: the client may
    have an unsealed channel (only if it asks too); `aes_gcm`: offer AES-256-GCM; `report_fd`: the write end
    of a pipe the worker reports its counts on (`ppft_worker.process.report`; the caller closes its copy),
    -1 for none; `refs_fd`: the read end of the pipe it is passed the `put()` refs on
    (`ppft_worker.process.refchannel`; the caller closes its copy), -1 for none. Raises OSError if no
    process could be started. The worker sends nothing before the client's first bytes."""
    env = worker_env(secret.hex())
    env[DIRECT_ENV] = "plain" if allow_plain else "sealed"
    if aes_gcm:
        env[AES_GCM_ENV] = "1"
    passed: tuple[int, ...] = ()
    if report_fd >= 0:
        env[REPORT_FD_ENV] = str(report_fd)
        passed = (report_fd,)
    if refs_fd >= 0:
        env[REFS_FD_ENV] = str(refs_fd)
        passed = (*passed, refs_fd)
    fd = sock.fileno()
    return subprocess.Popen(worker_command(), stdin=fd, stdout=fd, env=env, close_fds=True, pass_fds=passed)
