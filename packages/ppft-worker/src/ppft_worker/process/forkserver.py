"""The fork server: a small process that forks ready-made workers for its pool, and direct workers for its
ppserver, so starting one costs a fork rather than an interpreter start.

A pool that replaces workers (recycling, a memory limit, a time limit, `terminate`), or whose ppserver runs
direct workers, starts one (`ppft_worker.pool.forkserver`):
`python -S -c "import ppft_worker.process.forkserver ..."`, with a worker's environment (`spawn.worker_env`)
and one end of a `SOCK_SEQPACKET` socket pair, whose number is in PPFT_FORKSERVER_FD (`FORKSERVER_FD_ENV`).
It imports what a worker needs on its way through its life (the loop, the job runner, output capture,
logging; for direct workers, PPFT_FORKSERVER_DIRECT, also their loop and the sealed channel's ciphers),
freezes its heap for the garbage collector (`gc.freeze`: a child's collections then leave the inherited pages
unwritten, so they stay shared), says it is ready, and serves:

    pool --"F" + [job pipe's read end, result pipe's write end, output region (optional)]--> fork server
    pool --"D" + flags, the secret + [client's socket, report pipe's write end, ref pipe's read end (both
          optional)]--> fork server             a direct worker (`FORKSERVER_DIRECT_FLAGS`)
    fork server --"P" + pid--> pool                 the child runs `run_served` or `run_direct_served`
    fork server --"E" + reason--> pool              the fork failed, or the request is not one
    fork server --"X" + pid + exit code--> pool     a child ended (the server reaps its children)

Each message is one datagram (`FORKSERVER_MESSAGE`: a byte and two int32; after a "D", the secret the client
proves to the direct worker, which is the ppserver's, not the pool's). The server dies with its pool
(PR_SET_PDEATHSIG, and EOF on its socket) and its children die with it (their parent is the server: the same
tie an exec'd worker has to its pool or ppserver), so a pool that is SIGKILLed leaves nothing behind; the pool
replaces the workers it lost, and a direct worker's client opens its link again.

It must never run a job or a pool's code itself, never write to stdout or stderr (a child would inherit the
unflushed bytes), and a child must never return into the server's loop: it leaves through `os._exit`.
"""

from __future__ import annotations

import contextlib
import errno
import gc
import os
import select
import signal
import socket
import sys
import traceback
from collections.abc import Callable

from . import (
    FORKSERVER_DIRECT_ENV,
    FORKSERVER_DIRECT_FLAGS,
    FORKSERVER_FD_ENV,
    FORKSERVER_MESSAGE,
    FORKSERVER_SECRET_MAX,
    PARENT_ENV,
    SECRET_ENV,
    SEGMENTS_ENV,
    _run,
    _run_direct,
    _take_channel,
    _tie_to_parent,
)

__all__ = ["main", "run_direct_served", "run_served"]

MESSAGE = FORKSERVER_MESSAGE

_segments = False  # the pool maps its workers' shared segments (`ppft_worker.mapped`): set by `main`

_MAX_FDS = 3
_REQUEST_MAX = MESSAGE.size + FORKSERVER_SECRET_MAX
_EXIT_CHILD_FAILED = 70

_Child = Callable[[tuple[int, ...]], int]  # what a forked child runs, given the server's descriptors to close


def _preload() -> None:
    """Import what a worker imports over its life, here once: no child imports (and writes pages for) it."""
    import logging  # noqa: F401, PLC0415
    import pickle  # noqa: F401, PLC0415

    from ppft_protocol.cpython import preload_libc_access  # noqa: PLC0415

    from . import JobRunner, OutputCapture, keep_freed_memory, map_region  # noqa: F401, PLC0415
    from .loop import _setup_logging  # noqa: PLC0415

    preload_libc_access()
    keep_freed_memory()  # malloc's settings are inherited: a child need not make them again
    _setup_logging()  # the worker's "ppft" log handler, on fd 2 as a child's: inherited, made once


def _preload_direct() -> None:
    """Import what a direct worker imports beyond a pool's worker: its loop, its report and ref pipes, and the
    ciphers of its sealed channel (`cryptography`: tens of ms of an exec'd direct worker's start)."""
    import cryptography.exceptions  # noqa: PLC0415 - `ppft_protocol.channel` imports these on use
    import cryptography.hazmat.primitives.ciphers  # noqa: PLC0415
    import cryptography.hazmat.primitives.ciphers.aead  # noqa: F401, PLC0415

    from . import direct, refchannel, refs, report  # noqa: F401, PLC0415


def main() -> int:
    """The fork server's entry; returns its exit code (0 when its pool closed the socket)."""
    fd_text = os.environ.pop(FORKSERVER_FD_ENV, "")
    secret_hex = os.environ.pop(SECRET_ENV, "")
    parent = os.environ.pop(PARENT_ENV, "")
    global _segments
    _segments = os.environ.pop(SEGMENTS_ENV, "") == "1"
    direct = os.environ.pop(FORKSERVER_DIRECT_ENV, "") == "1"
    if not fd_text.isdigit() or not parent.isdigit():
        sys.stderr.write(
            f"ppft fork server: {FORKSERVER_FD_ENV} or {PARENT_ENV} is missing: a ppft pool starts this\n"
        )
        return 2
    try:
        secret = bytes.fromhex(secret_hex)
    except ValueError:
        secret = b""
    sock = socket.socket(fileno=int(fd_text))
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is for the workers and the pool, not for us
    if not _tie_to_parent(int(parent)):
        return 1
    _preload()
    if _segments:
        import ppft_worker.mapped  # noqa: PLC0415 - imported by every worker that maps segments
        import ppft_worker.segments  # noqa: F401, PLC0415
    if direct:
        _preload_direct()
    gc.collect()
    gc.freeze()  # what we hold now is never collected again, here or in a child: its pages stay shared
    wake_r, wake_w = os.pipe()
    for fd in (wake_r, wake_w):
        os.set_blocking(fd, False)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGCHLD, lambda *_: None)  # wakes the select below, through the wake-up pipe
    try:
        sock.send(MESSAGE.pack(b"R", os.getpid(), 0))
        _serve(sock, secret, wake_r, (sock.fileno(), wake_r, wake_w))
    except (BrokenPipeError, ConnectionResetError):
        pass  # the pool closed its end (it may do so before we are ready): nothing to serve
    return 0


def _serve(sock: socket.socket, secret: bytes, wake_r: int, own_fds: tuple[int, ...]) -> None:
    while True:
        ready, _, _ = select.select([sock.fileno(), wake_r], [], [])
        if wake_r in ready:
            with contextlib.suppress(BlockingIOError):
                while os.read(wake_r, 512):
                    pass
        _reap(sock)
        if sock.fileno() in ready:
            try:
                data, fds, _, _ = socket.recv_fds(sock, _REQUEST_MAX, _MAX_FDS)
            except InterruptedError:
                continue
            if not data:
                return  # the pool closed its end: our children see EOF on their pipes too
            try:
                child = _request(secret, data, fds)
                if child is None:
                    sock.send(MESSAGE.pack(b"E", errno.EINVAL, 0))
                    continue
                try:
                    pid = _fork(child, own_fds)
                except OSError as exc:
                    sock.send(MESSAGE.pack(b"E", exc.errno or 0, 0))
                else:
                    sock.send(MESSAGE.pack(b"P", pid, 0))
            finally:
                for fd in fds:
                    os.close(fd)


def _request(secret: bytes, data: bytes, fds: list[int]) -> _Child | None:
    """What a child forked for this request runs; None if the request is not one."""
    kind = data[:1]
    if kind == b"F" and len(data) == MESSAGE.size and len(fds) >= 2:
        return lambda own_fds: run_served(secret, fds, own_fds)
    if kind == b"D" and len(data) >= MESSAGE.size:
        _, flags, length = MESSAGE.unpack_from(data)
        bits = {name: bool(flags >> i & 1) for i, name in enumerate(FORKSERVER_DIRECT_FLAGS)}
        if length == len(data) - MESSAGE.size and len(fds) == 1 + bits["report"] + bits["refs"]:
            return lambda own_fds: run_direct_served(data[MESSAGE.size :], bits, fds, own_fds)
    return None


def _reap(sock: socket.socket) -> None:
    """Reap every child that ended, and tell the pool how each ended."""
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        sock.send(MESSAGE.pack(b"X", pid, os.waitstatus_to_exitcode(status)))


def _fork(child: _Child, own_fds: tuple[int, ...]) -> int:
    pid = os.fork()
    if pid:
        return pid
    code = _EXIT_CHILD_FAILED
    try:
        code = child(own_fds)
    except BaseException:  # noqa: BLE001 - reported on fd 2 and in the exit code; nothing may escape
        with contextlib.suppress(BaseException):
            text = f"ppft-worker[{os.getpid()}]: forked worker failed:\n{traceback.format_exc()}"
            os.write(2, text.encode())
    finally:
        with contextlib.suppress(BaseException):
            sys.stdout.flush()
            sys.stderr.flush()
        os._exit(code)


def _leave_server(own_fds: tuple[int, ...]) -> None:
    """In a child: signals as an exec'd worker has them, and none of the server's descriptors."""
    signal.set_wakeup_fd(-1)
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    for fd in own_fds:
        os.close(fd)


def run_served(secret: bytes, fds: list[int], own_fds: tuple[int, ...]) -> int:
    """In a child of the fork server: become a worker on the descriptors the pool sent (job pipe, result pipe,
    output region), as an exec'd worker starts: the channel on fds 0 and 1, fd 2 inherited, the region as a
    descriptor, nothing else of the server's; signals as an exec'd worker has them."""
    _leave_server(own_fds)
    os.dup2(fds[0], 0)
    os.dup2(fds[1], 1)
    output_fd = -1
    if len(fds) > 2:
        output_fd = os.dup(fds[2])  # close-on-exec: the job's own child processes get none of it
    for fd in fds:
        os.close(fd)
    # The heap stays frozen: a collection that walked the inherited objects would write to every page of
    # them, a copy of each for this child.
    chan_in, chan_out = _take_channel()
    return _run(chan_in, chan_out, secret, os.getppid(), output_fd=output_fd, segments=_segments)


def run_direct_served(secret: bytes, bits: dict[str, bool], fds: list[int], own_fds: tuple[int, ...]) -> int:
    """In a child of the fork server: become a direct worker (`ppft_worker.process.direct`) on what the
    ppserver sent (the client's socket; its report pipe's write end and its ref pipe's read end, as `bits`
    say), as an exec'd one starts (`start_direct_worker`): the socket on fds 0 and 1, fd 2 inherited, the
    pipes as descriptors of their own (not inherited by a job's processes), `secret` the ppserver's, tied to
    its parent (this server), nothing else of the server's."""
    _leave_server(own_fds)
    os.dup2(fds[0], 0)
    os.dup2(fds[0], 1)
    pipes = iter(fds[1:])
    report_fd = os.dup(next(pipes)) if bits["report"] else -1
    refs_fd = os.dup(next(pipes)) if bits["refs"] else -1
    for fd in fds:
        os.close(fd)
    chan_in, chan_out = _take_channel()
    mode = "plain" if bits["plain"] else "sealed"
    parent = str(os.getppid())
    return _run_direct(chan_in, chan_out, secret, parent, mode, bits["aes_gcm"], (report_fd, refs_fd))
