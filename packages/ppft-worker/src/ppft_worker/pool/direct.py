"""How a ppserver starts a direct worker: a worker process of its own for one client's connection.

A client asks for a direct link with `Attach`; the ppserver hands the connected socket to a new process
(`start_direct_worker`), which runs a new handshake with the client and then the worker loop on it
(`ppft_worker.process.direct`). A client opens its direct links when it connects, one per worker of the
ppserver, so the process is forked by the ppserver's fork server when one is ready (`forkserver`: the
ppserver's pool shares its own, `WorkerLives.share_forkserver`), as a pool's replacements are: a fork of a
process that has imported what a direct worker needs, its sealed channel's ciphers included, instead of an
interpreter start. Otherwise (no fork server on this platform, not ready yet, given up, or the request
failed) it is exec'd like a pool's worker started by exec (`spawn`). Both are the same process: the socket
as its fds 0 and 1, `PPFT_WORKER_DIRECT` (or the request's flags) saying what its channel may be, the write
end of the ppserver's report pipe (`PPFT_WORKER_REPORT_FD`) and the read end of its ref pipe
(`PPFT_WORKER_REFS_FD`) as descriptors of their own.
"""

from __future__ import annotations

import logging
import socket
import subprocess

from ..process import AES_GCM_ENV, DIRECT_ENV, REFS_FD_ENV, REPORT_FD_ENV
from .forkstart import WorkerProcess
from .spawn import worker_command, worker_env

TYPE_CHECKING = False
if TYPE_CHECKING:
    from .forkserver import ForkServer

__all__ = ["start_direct_worker"]

log = logging.getLogger("ppft.pool")


def start_direct_worker(
    sock: socket.socket,
    secret: bytes,
    *,
    allow_plain: bool,
    aes_gcm: bool,
    report_fd: int = -1,
    refs_fd: int = -1,
    server: ForkServer | None = None,
) -> WorkerProcess:
    """Start a direct worker serving the client on `sock` (connected; the caller keeps its own descriptor,
    and writes nothing more on it). `secret`: what the client proves again; `allow_plain`: the client may
    have an unsealed channel (only if it asks too); `aes_gcm`: offer AES-256-GCM; `report_fd`: the write end
    of a pipe the worker reports its counts on (`ppft_worker.process.report`; the caller closes its copy),
    -1 for none; `refs_fd`: the read end of the pipe it is passed the `put()` refs on
    (`ppft_worker.process.refchannel`; the caller closes its copy), -1 for none; `server`: the fork server
    to ask first, if it is ready (the process is then a `ServedProcess`, its child, else a
    `subprocess.Popen`). Raises OSError if no process could be started. The worker sends nothing before the
    client's first bytes."""
    if server is not None and server.ready():
        try:
            return server.fork_direct(
                sock.fileno(), secret, allow_plain=allow_plain, aes_gcm=aes_gcm, report_fd=report_fd,
                refs_fd=refs_fd,
            )  # fmt: skip
        except OSError as exc:  # a broken server is restarted for the next one (it logged why)
            log.debug("a direct worker is exec'd: the fork server could not fork it (%s)", exc)
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
